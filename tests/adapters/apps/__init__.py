"""Small apps per framework, one domain (``items``), for the adapter tests and real servers."""
