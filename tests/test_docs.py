"""The docs cannot drift from the CLI: option tables are generated, and every command has one.

The tables in docs/*.md are rewritten by ``python docs/gen_options.py`` from the click
commands typer builds; these tests fail when a page's table differs from what the CLI
says now (an option added, renamed, or its help or default changed), when a command
has no table, and when the README links to a page or section that does not exist.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_options", DOCS / "gen_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


@pytest.fixture(scope="module")
def known():
    return gen.commands()


@pytest.mark.parametrize("page", gen.pages(DOCS), ids=lambda p: p.name)
def test_options_block_is_current(page, known):
    text = page.read_text(encoding="utf-8")
    assert gen.render(text, known, page.name) == text, (
        f"{page.name}: an options table is out of date; run `python docs/gen_options.py`"
    )


def test_every_command_has_an_options_table(known):
    missing = sorted(set(known) - gen.documented(DOCS))
    assert not missing, f"no options table in docs/ for: {', '.join(missing)}"


def test_a_changed_option_makes_the_page_stale(known):
    page = "intro\n<!-- options:begin urbanln embed -->\nold table\n<!-- options:end -->\nafter\n"
    fresh = gen.render(page, known)
    assert "`--batch-size`" in fresh and "`URBANLN_EMBED_BATCH_SIZE`" in fresh and fresh.endswith("after\n")
    assert gen.render(fresh, known) == fresh  # regenerating a current page changes nothing
    edited = fresh.replace("Images per forward pass.", "Images per pass.")
    assert gen.render(edited, known) == fresh


def test_unknown_command_or_missing_end_is_an_error(known):
    with pytest.raises(ValueError, match="no command 'urbanln tiles'"):
        gen.render("<!-- options:begin urbanln tiles -->\n<!-- options:end -->\n", known)
    with pytest.raises(ValueError, match="has no"):
        gen.render("<!-- options:begin urbanln tile -->\n", known)


def test_every_option_of_the_cli_is_in_its_table(known):
    """Belt and braces: each option name of each command appears in that command's block."""
    blocks = {}
    for page in gen.pages(DOCS):
        text = page.read_text(encoding="utf-8")
        for match in gen.BEGIN.finditer(text):
            blocks[" ".join(match["command"].split())] = text[match.end() : text.find(gen.END, match.end())]
    for path, (command, ctx) in known.items():
        for param in command.get_params(ctx):
            for name in (*param.opts, *getattr(param, "secondary_opts", ())):
                if name in ("--help", "-h") or not name.startswith("-"):
                    continue
                assert f"`{name}`" in blocks[path], f"{path}: {name} is missing from its table"


def _slugs(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than - and _ removed, spaces to dashes."""
    headings = re.findall(r"^#+\s+(.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("source", [ROOT / "README.md", *gen.pages(DOCS)], ids=lambda p: p.name)
def test_links_resolve(source):
    """Every relative link to a page (and its #section) of README.md and docs/ points somewhere that exists."""
    text = source.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s:]+\.md)?(?:#([^)\s]+))?\)", text)
    for target, anchor in links:
        page = (source.parent / target) if target else source
        assert page.is_file(), f"{source.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in _slugs(page), f"{source.name} links to {target}#{anchor}; no such heading"
    if source.name == "README.md":
        assert any(t.startswith("docs/") for t, _ in links), "the README links to no page in docs/"


def test_every_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in gen.pages(DOCS):
        assert f"docs/{page.name}" in readme, f"README does not link to docs/{page.name}"
