"""What the README promises a new user, read from README.md itself so the two cannot drift."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers import REPO_ROOT

__all__ = ["README", "DjangoStep", "Step", "build_django_project", "check_snippet_app", "django_steps",
           "snippet", "snippet_extras", "walkthrough"]

README = (REPO_ROOT / "README.md").read_text()
README_PORT = "8000"


@dataclass(frozen=True)
class Step:
    """One line of the walkthrough: a shell command and what its output contains."""

    command: str
    expected: str

    def run(self, port: int) -> str:
        """Run the command against a server on ``port``; return its output (checked)."""
        command = self.command.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}")
        result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True,
                                timeout=60, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{command!r} exited {result.returncode}: {output}"
        assert _squeezed(self.expected) in _squeezed(output), (
            f"README says {command!r} shows {self.expected!r}; it printed {output!r}")
        return output


def _squeezed(text: str) -> str:
    # JSON spacing and header-name case differ between frameworks; the README shows one form.
    return re.sub(r"\s+", "", text).lower()


def walkthrough() -> list[Step]:
    """The ``<!-- walkthrough -->`` block: ``command  # expected output`` per line."""
    match = re.search(r"<!-- walkthrough -->\n```sh\n(.*?)```", README, re.DOTALL)
    assert match, "README.md has no <!-- walkthrough --> block"
    steps = []
    for line in match.group(1).splitlines():
        command, separator, expected = line.partition("  # ")
        assert separator, f"walkthrough line without '  # expected output': {line!r}"
        steps.append(Step(command.strip(), expected.strip()))
    return steps


def snippet(name: str) -> str:
    """The ``<!-- snippet: name -->`` code block (a complete ``app.py``)."""
    match = re.search(rf"<!-- snippet: {name} -->\n```python\n(.*?)```", README, re.DOTALL)
    assert match, f"README.md has no snippet {name!r}"
    return match.group(1)


def snippet_extras(name: str) -> list[str]:
    """The extras the README asks to install for snippet ``name`` (the ``pip install`` before it)."""
    marker = "<!-- django: shell -->" if name == "django" else f"<!-- snippet: {name} -->"
    before = README[:README.index(marker)]
    installs = re.findall(r'pip install "scalekit\[([a-z,]+)\]"', before[-400:])
    assert installs, f"README.md names no extras to install before the {name} app"
    return installs[-1].split(",")


@dataclass(frozen=True)
class DjangoStep:
    """A step of the README's complete Django app: ``shell`` lines to run, or a file to write
    (``path``) or to extend (``path +=``)."""

    target: str
    text: str


def django_steps() -> list[DjangoStep]:
    steps = re.findall(r"<!-- django: ([^ ]+(?: \+=)?) -->\n```[a-z]+\n(.*?)```", README, re.DOTALL)
    assert steps, "README.md has no <!-- django: ... --> steps"
    return [DjangoStep(target, text) for target, text in steps]


def build_django_project(folder: Path, shell: Callable[[str], None]) -> str:
    """Play the README's Django steps in ``folder``, running commands with ``shell``; return the
    serve command (the last shell line), which the caller runs on its own port."""
    serve = ""
    for step in django_steps():
        if step.target == "shell":
            for line in filter(None, step.text.splitlines()):
                if line.startswith("scalekit serve "):
                    serve = line
                else:
                    shell(line)
        elif step.target.endswith(" +="):
            path = folder / step.target.removesuffix(" +=")
            path.write_text(path.read_text() + "\n" + step.text)
        else:
            (folder / step.target).write_text(step.text)
    assert serve, "the README's Django steps end without `scalekit serve ...`"
    return serve


def check_snippet_app(get: Callable[[str], Any], post: Callable[[str], Any]) -> None:
    """What each README app does: a miss, a hit, a price change, a miss with the new price."""
    first, second = get("/products/1"), get("/products/1")
    assert first.status_code == 200 and _json(first) == {"id": 1, "name": "Teapot", "price_cents": 4900}
    assert not _is_hit(first) and _is_hit(second), (first.headers, second.headers)
    assert post("/products/1/price/3900").status_code == 200
    after = get("/products/1")
    assert not _is_hit(after), after.headers
    assert _json(after)["price_cents"] == 3900


def _json(response: Any) -> Any:
    return response.get_json() if hasattr(response, "get_json") else response.json()


def _is_hit(response: Any) -> bool:
    return bool(re.search(r";\s*hit\b", response.headers.get("cache-status", "")))
