"""The README and docs/ stay in step with the code: links and anchors resolve, every setting is documented.

Fast and model-free: reads README.md, docs/*.md and benchmarks/README.md, and the fields of `EngineSettings` and
the bot's `Settings`. Anchors are checked against the headings as GitHub turns them into ids.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.settings import Settings
from engine.settings import EngineSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")])
README_MAX_LINES = 260
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
# A path of this repository in backticks (`engine/models/align.py`, `bot/handlers/`); placeholders are skipped.
CODE_PATH = re.compile(r"`((?:engine|bot|benchmarks|deploy|migrations)/[\w./-]*)`")


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's id for a heading: its text in lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    ids = set()
    for heading in HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def test_the_documents_exist() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in DOCS}
    assert {
        "README.md",
        "benchmarks/README.md",
        "docs/architecture.md",
        "docs/configuration.md",
        "docs/operations.md",
        "docs/accuracy.md",
    } <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with id {anchor!r} in {linked.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_paths_named_in_the_docs_exist(doc: Path) -> None:
    """A module or folder the docs name (`engine/people/cluster.py`) is where they say."""
    missing = [
        path
        for path in CODE_PATH.findall(doc.read_text(encoding="utf-8"))
        if not any(mark in path for mark in "<*{") and not (ROOT / path.rstrip(".")).exists()
    ]
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def layout_tree() -> list[str]:
    """The paths drawn in docs/architecture.md's "The layout" tree (`engine/`, `engine/models/align.py`, ...)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"^## The layout\n+```\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block, "docs/architecture.md has no tree under '## The layout'"
    paths: list[str] = []
    parents: list[str] = []
    for line in block.group(1).splitlines():
        match = re.match(r"( *)([\w.]+/?)(?:\s{2,}|$)", line)
        depth = (len(match.group(1)) // 2) if match else 99
        if not match or depth > len(parents):  # a description's second line
            continue
        del parents[depth:]
        path = "/".join([*parents, match.group(2).rstrip("/")])
        paths.append(path)
        if match.group(2).endswith("/"):
            parents.append(match.group(2).rstrip("/"))
    return paths


def test_the_architecture_tree_is_the_code_layout() -> None:
    """Every file the tree draws exists, and every package of engine/ and bot/ is drawn."""
    drawn = layout_tree()
    assert not [path for path in drawn if not (ROOT / path).exists()], "drawn but missing: " + ", ".join(
        path for path in drawn if not (ROOT / path).exists()
    )
    packages = {
        init.parent.relative_to(ROOT).as_posix()
        for top in ("engine", "bot")
        for init in (ROOT / top).glob("*/__init__.py")
    }
    assert not packages - set(drawn), f"packages missing from the tree: {sorted(packages - set(drawn))}"


def test_every_setting_is_in_the_configuration_page() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    fields = set(EngineSettings.model_fields) | set(Settings.model_fields)
    missing = sorted(name.upper() for name in fields if f"`{name.upper()}`" not in page)
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_the_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; details belong in docs/"
    text = "\n".join(lines)
    for command in ("make run", "make test"):
        assert command in text
