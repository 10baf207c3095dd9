"""Passwords given apart from a URL: as a value (``password``) or as a file (``password_file``).

A password inside a URL must be percent-encoded (``@``, ``:``, ``/``, ``#`` and ``%`` end or
change the part they are in), which a generated secret rarely is: ``postgresql://u:p@ss@db/x``
does not parse. Given separately, the password goes to the driver as it is. ``password_file``
reads it from a file, the way Docker and Kubernetes hand secrets to a container, so it never
sits in the environment; the file's content is the password, less one trailing newline.

Both database and Redis settings use these checks; each names its own key in the errors.

>>> check_password_source("redis://redis:6379/0", password="p@ss:w/rd", password_file=None)
>>> password_of(password="p@ss:w/rd", password_file=None)
'p@ss:w/rd'
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["check_password_source", "password_of", "url_has_password"]


def url_has_password(url: str) -> bool:
    """Whether ``url``'s user part carries a password (``scheme://user:password@host``)."""
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    return bool(at) and ":" in userinfo


def check_password_source(url: str | None, *, password: str | None, password_file: str | None) -> None:
    """Raise a :class:`ConfigError` unless at most one of the three gives the password and a
    ``password_file`` can be read (so a missing secret fails at start-up, not on first use)."""
    if password is not None and password_file is not None:
        raise ConfigError(key="password_file", value=password_file,
                          expected="unset when password is set (give the password one way)")
    if (password is not None or password_file is not None) and url is not None and url_has_password(url):
        raise ConfigError(key="url", value=_without_password(url),
                          expected="a URL without a password when password or password_file is set "
                                   "(give the password one way)")
    if password is not None and password == "":
        raise ConfigError(key="password", value="", expected="a non-empty password, or unset")
    if password_file is not None:
        _read(password_file)


def password_of(*, password: str | None, password_file: str | None) -> str | None:
    """The password to hand the driver: ``password``, else the content of ``password_file``,
    else None (the URL's own, if any, applies)."""
    if password is not None:
        return password
    if password_file is not None:
        return _read(password_file)
    return None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(key="password_file", value=path,
                          expected=f"a readable UTF-8 file holding the password ({error.__class__.__name__}: "
                                   f"{getattr(error, 'strerror', None) or error})") from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise ConfigError(key="password_file", value=path, expected="a file holding a non-empty password")
    return secret


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}").geturl()
