"""Small apps the driver and server tests run: plain WSGI/ASGI, Flask and Starlette."""
