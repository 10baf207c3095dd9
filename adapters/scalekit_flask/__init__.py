"""scalekit for Flask: two lines, and the request's pooled connection, cache rules and tags.

>>> from flask import Flask
>>> from scalekit_flask import ScaleKit
>>> app = Flask(__name__)
>>> scalekit_ext = ScaleKit(app)      # or ScaleKit().init_app(app) in an app factory

Views then use ``db`` (the request's pooled connection), ``@cached(ttl_seconds=..., tags=...)``,
``tag(...)`` and ``invalidate(...)``; the metrics route label is the URL rule that matched.
"""

from __future__ import annotations

from scalekit import ainvalidate, invalidate, tag

from .extension import EXTENSION_KEY, ScaleKit
from .helpers import cached, db, get_db

__all__ = ["EXTENSION_KEY", "ScaleKit", "ainvalidate", "cached", "db", "get_db", "invalidate", "tag"]
