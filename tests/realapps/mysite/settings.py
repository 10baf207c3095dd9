"""A Django project as ``django-admin startproject`` lays it out, with admin, auth, sessions,
messages and CSRF on, scalekit installed the README's middleware-only way, and a cache rule
that covers every path (admin included). The SQLite file comes from ``REALAPPS_MYSITE_DB``."""

from __future__ import annotations

import os

SECRET_KEY = "realapps-mysite-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "tests.realapps.mysite.notes",
]

MIDDLEWARE = [
    "scalekit_django.middleware.ScaleKitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tests.realapps.mysite.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
WSGI_APPLICATION = "tests.realapps.mysite.wsgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("REALAPPS_MYSITE_DB", "")}}
LOGIN_URL = "/admin/login/"
STATIC_URL = "static/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# settings.SCALEKIT is the configuration however the project is served (scalekit serve too).
SCALEKIT = {"cache": {"status_name": "mysite", "rules": [{"path": "/*", "ttl_seconds": 60}]}}
