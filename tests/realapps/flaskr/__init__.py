"""Flask's tutorial app, flaskr, as the tutorial writes it (factory, raw ``sqlite3``, blueprints,
session login, flashed messages), with scalekit installed in the factory.

Two changes from the tutorial, both what scalekit's README asks of an app whose writes do not
go through scalekit's pool: the index tags its page ``posts``, and each write invalidates that
tag after committing (table tracking cannot see raw ``sqlite3``).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from scalekit_flask import ScaleKit


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY="dev",
        DATABASE=os.path.join(app.instance_path, "flaskr.sqlite"),
        SCALEKIT={"cache": {"rules": [{"path": "/", "ttl_seconds": 60}]}},
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        os.makedirs(app.instance_path, exist_ok=True)
    else:
        app.config.from_mapping(test_config)

    from . import auth, blog, db

    db.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(blog.bp)
    app.add_url_rule("/", endpoint="index")

    ScaleKit(app)
    return app
