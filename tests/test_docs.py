"""The documents stay true to the repository: the tests they name exist, their links resolve,
and the commands they name run what they say."""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_check_lints_and_type_checks_the_package_and_the_adapters() -> None:
    commands = subprocess.run(["make", "--no-print-directory", "-n", "check"], check=True,
                              capture_output=True, text=True, cwd=ROOT).stdout.splitlines()
    assert commands == ["python3 -m ruff check scalekit adapters tests",
                        "python3 -m mypy scalekit adapters"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    tools = {requirement.split("==")[0] for requirement in extras["dev"]}
    assert {"ruff", "mypy"} <= tools
    assert 'pip install -e ".[dev]"' in (ROOT / "README.md").read_text()


TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:::(\w+))?`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def defined_tests(path: Path) -> set[str]:
    """``name`` and ``Class::name`` for every test function, class or alias a module defines."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            names.update(f"{node.name}::{item.name}" for item in node.body
                         if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)))
        elif isinstance(node, ast.Assign):  # TestMachine = Machine.TestCase
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return {name for name in names if name.split("::")[-1].startswith(("test", "Test"))}


def test_architecture_names_tests_that_exist() -> None:
    references = TEST_REFERENCE.findall((ROOT / "docs" / "ARCHITECTURE.md").read_text())
    assert len(references) >= 40, "the invariants name the tests that hold them"
    missing = []
    for document in documents():
        for path, name, method in TEST_REFERENCE.findall(document.read_text()):
            wanted = f"{name}::{method}" if method else name
            module = ROOT / path
            if not module.is_file() or wanted not in defined_tests(module):
                missing.append(f"{document.relative_to(ROOT)}: {path}::{wanted}")
    assert not missing, f"tests named in the documents that do not exist: {missing}"


def test_files_named_in_the_documents_exist() -> None:
    named = re.compile(r"`((?:scalekit|adapters|tests|bench|deploy|examples|scripts)/[\w./-]+)")
    missing = [f"{document.relative_to(ROOT)}: {path}" for document in documents()
               for path in named.findall(document.read_text())
               if not (ROOT / path.rstrip(".")).exists()]
    assert not missing, missing


def test_every_invariant_names_a_test() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    invariants = text.split("\n## Invariants\n", 1)[1]
    items = re.split(r"\n(?=\d+\. \*\*)", invariants)[1:]
    assert len(items) >= 6
    for item in items:
        assert TEST_REFERENCE.search(item), item.splitlines()[0]


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "deploy" / "README.md",
            *sorted((ROOT / "docs").rglob("*.md"))]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in headings}


def test_relative_links_resolve() -> None:
    broken = []
    for document in documents():
        text = re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (document.parent / path_part).resolve() if path_part else document
            if not resolved.exists() or not resolved.is_relative_to(ROOT):
                broken.append(f"{document.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{document.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_every_deep_dive_is_linked_from_the_architecture() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    pages = sorted(path.name for path in (ROOT / "docs" / "design").glob("*.md"))
    assert pages and [page for page in pages if f"(design/{page})" not in text] == []
    assert "(docs/ARCHITECTURE.md)" in (ROOT / "README.md").read_text()


def test_no_file_cites_an_issue_or_invariant_number() -> None:
    """'issue 7' or 'invariant 2' means nothing in a clone: name the behaviour instead."""
    citation = re.compile(r"\b(?:issue|invariant)s? #?\d+", re.IGNORECASE)
    found = []
    folders = ("scalekit", "adapters", "tests", "examples", "bench", "deploy", "scripts", "docs")
    trees = (sorted((ROOT / folder).rglob("*")) for folder in folders)
    for paths in ([ROOT / "README.md"], *trees):
        for path in paths:
            if path.suffix not in {".py", ".md", ".yml", ".yaml", ".toml", ".vcl", ".conf", ".sh"}:
                continue
            if path == Path(__file__).resolve():
                continue
            found.extend(f"{path.relative_to(ROOT)}:{number}" for number, line in
                         enumerate(path.read_text(errors="replace").splitlines(), 1)
                         if citation.search(line))
    assert not found, found
