"""Create the project's tables and its two staff users: ``python -m tests.realapps.mysite.setup_db``
with ``REALAPPS_MYSITE_DB`` set (what ``manage.py migrate`` and ``createsuperuser`` would do)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.realapps.mysite.settings")

import django

django.setup()

from django.contrib.auth.models import User
from django.core.management import call_command

call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
for name in ("alice", "bob"):
    User.objects.create_superuser(name, f"{name}@example.com", f"{name}-password")
