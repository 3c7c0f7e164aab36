"""Every ```python block of README.md and docs/**/*.md runs (the blocks of a page in order, in one namespace, in a
temporary folder), with hub ids mapped to a tiny local model (`hub_stubs`). A block preceded by the line
`<!-- docs-test: skip: <reason> -->` is skipped with that reason; ```bash blocks are not executed."""

from __future__ import annotations

import pytest

from . import hub_stubs
from .markdown import ROOT, code_blocks, doc_pages

BLOCKS = [b for page in doc_pages() for b in code_blocks(page.read_text(encoding="utf-8"), page)
          if b.lang in ("python", "py", "python3")]
_NAMESPACES: dict = {}  # page -> (namespace, folder): the blocks of a page share them, in page order


def run_block(block, namespace: dict) -> None:
    """Execute a block so that a traceback names the Markdown file and its line."""
    code = "\n" * block.line + block.code  # line numbers of the page: the code starts on the line after the fence
    exec(compile(code, str(block.path), "exec"), namespace)


@pytest.fixture(scope="session")
def tiny_hub_model(tmp_path_factory):
    return hub_stubs.save_tiny_hub_model(tmp_path_factory.mktemp("tiny-hub-model"))


def test_the_pages_have_python_blocks():
    assert {b.path.name for b in BLOCKS} >= {"README.md"}, "the README's quickstarts are gone or not ```python"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b.path.relative_to(ROOT)}:{b.line}")
def test_python_block_runs(block, tiny_hub_model, tmp_path_factory, monkeypatch):
    if block.skip_reason:
        pytest.skip(block.skip_reason)
    hub_stubs.install(monkeypatch, tiny_hub_model)
    if block.path not in _NAMESPACES:
        _NAMESPACES[block.path] = ({"__name__": "__docs__"}, tmp_path_factory.mktemp("docs-run"))
    namespace, folder = _NAMESPACES[block.path]
    monkeypatch.chdir(folder)
    trainer = namespace.get("trainer")
    run_block(block, namespace)
    if namespace.get("trainer") is not trainer and hasattr(namespace["trainer"], "state"):
        # a snippet that trains ran the smoke run, on the tiny model (not a silently different set-up)
        assert namespace["trainer"].state.global_step in (0, hub_stubs.SMOKE_RUN["max_steps"])
