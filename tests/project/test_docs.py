"""The documentation: generated blocks equal a fresh generation, relative links lead to files, README stays short."""
from __future__ import annotations

import re

import pytest

from builders import PROJECT
from pipeline.handoffs import contract, reference_pages

DOCS = PROJECT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
#: A markdown link's target: ``[text](target)``.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_there_are_at_least_six_pages_and_each_is_linked_from_the_readme():
    readme = (PROJECT / "README.md").read_text()
    assert len(PAGES) >= 6
    assert [page.name for page in PAGES if f"(docs/{page.name})" not in readme] == []


def test_readme_is_at_most_200_lines():
    assert len((PROJECT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", sorted(reference_pages.GENERATED))
def test_generated_block_equals_a_fresh_generation(page):
    name, generate = reference_pages.GENERATED[page]
    assert reference_pages.block_of((DOCS / page).read_text(), name) == generate(), \
        f"docs/{page} is stale: run .venv/bin/python -m pipeline.handoffs.reference_pages"


def test_every_hand_off_key_is_described_outside_the_generated_block():
    text = (DOCS / "handoffs.md").read_text()
    start, end = reference_pages.block_span(text, "handoffs")
    written = text[:start] + text[end:]
    keys = {key for handoff in reference_pages.declared(contract.HandOff) for key in handoff.keys}
    assert sorted(key for key in keys if f"`{key}`" not in written) == []


@pytest.mark.parametrize("path", [PROJECT / "README.md", PROJECT / "CHANGELOG.md", *PAGES], ids=lambda p: p.name)
def test_every_relative_link_leads_to_an_existing_file(path):
    targets = [target.split("#")[0] for target in LINK.findall(path.read_text())
               if not re.match(r"[a-z]+:", target) and not target.startswith("#")]
    assert [target for target in targets if not (path.parent / target).exists()] == []


def test_with_block_replaces_only_the_block():
    text = f"before\n{reference_pages.begin('x')}\nold\n{reference_pages.END}\nafter\n"
    new = reference_pages.with_block(text, "x", "new")
    assert new == f"before\n{reference_pages.begin('x')}\nnew\n{reference_pages.END}\nafter\n"
    assert reference_pages.block_of(new, "x") == "new"
    with pytest.raises(ValueError, match="no block"):
        reference_pages.block_of("no markers", "x")
