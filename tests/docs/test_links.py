"""Every relative link and image of README.md and docs/**/*.md points to a file or folder of the repository, and
every #anchor to a heading (GitHub's slug rules) or an HTML anchor of the target page. External links are not
checked (no network in the tests)."""

from __future__ import annotations

import pytest

from .markdown import ROOT, broken_links, doc_pages


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []
