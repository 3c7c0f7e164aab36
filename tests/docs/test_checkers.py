"""The docs checkers fail on broken samples: a raising block, a broken link, a missing anchor; and GitHub's slugs."""

from __future__ import annotations

import pytest

from .markdown import anchors, broken_links, code_blocks, github_slug
from .test_code_blocks import run_block

SAMPLE = '''# A page

## What `bash run.sh main` does

Fine: [here](#what-bash-runsh-main-does), [other](other.md#a-heading), [folder](sub/), [web](https://example.org/x).
Broken: [gone](missing.md), [bad anchor](other.md#no-such-heading), [self](#nowhere), ![img](sub/nope.png).
Not a link: `[code](missing_too.md)`.

```python
x = 1
```

<!-- docs-test: skip: needs a GPU -->
```python
import cuda_only
```

```python
raise RuntimeError("broken block")
```

```bash
not python at all
```
'''


@pytest.fixture
def sample(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "other.md").write_text("# Other\n\n## A heading\n")
    page = tmp_path / "page.md"
    page.write_text(SAMPLE)
    return page


def test_broken_links_are_found(sample):
    problems = broken_links(sample, root=sample.parent)
    assert [p.split(": ")[1] for p in problems] == ["missing.md", "other.md#no-such-heading", "#nowhere",
                                                    "sub/nope.png"]
    assert all(p.startswith("page.md:6:") for p in problems)


def test_a_fixed_page_has_no_broken_links(sample):
    fixed = sample.read_text().replace("Broken:", "").split("\n")
    sample.write_text("\n".join(line for line in fixed if "missing.md" not in line))
    assert broken_links(sample, root=sample.parent) == []


def test_blocks_skip_marker_and_failure(sample):
    blocks = code_blocks(sample.read_text(), sample)
    assert [(b.lang, b.skip_reason) for b in blocks] == [("python", None), ("python", "needs a GPU"),
                                                         ("python", None), ("bash", None)]
    namespace = {}
    run_block(blocks[0], namespace)
    assert namespace["x"] == 1
    with pytest.raises(RuntimeError, match="broken block") as info:
        run_block(blocks[2], namespace)
    # the traceback names the Markdown page and the block's line in it
    assert any(tb.path == sample and tb.lineno + 1 == SAMPLE.splitlines().index('raise RuntimeError("broken block")') + 1
               for tb in info.traceback)


@pytest.mark.parametrize("heading, slug", [
    ("What `bash run.sh main` does", "what-bash-runsh-main-does"),
    ("Results of the full run (`--full`)", "results-of-the-full-run---full"),
    ("The objectives (`ceu_rl.objectives`)", "the-objectives-ceu_rlobjectives"),
    ("Scaling out: accelerate (DDP, FSDP, ZeRO-3) and vLLM rollouts", "scaling-out-accelerate-ddp-fsdp-zero-3-and-vllm-rollouts"),
    ("See [the docs](docs/README.md) & more!", "see-the-docs--more"),
    ("Ünïcode héading", "ünïcode-héading"),
])
def test_github_slugs(heading, slug):
    assert github_slug(heading) == slug


def test_repeated_headings_get_numbered_anchors():
    assert anchors("# Notes\n\n## Notes\n\n### Notes\n") == {"notes", "notes-1", "notes-2"}
