"""tests/conftest.py's HEAVIEST_FIRST names files that exist (a renamed file would silently be
scheduled late again, with the run's wall time back at the mercy of where it lands)."""

from __future__ import annotations

from tests.conftest import HEAVIEST_FIRST
from tests.servers import REPO_ROOT


def test_every_file_listed_first_exists() -> None:
    missing = [name for name in HEAVIEST_FIRST if not (REPO_ROOT / name).is_file()]
    assert missing == []
    assert len(set(HEAVIEST_FIRST)) == len(HEAVIEST_FIRST)
