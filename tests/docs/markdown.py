"""Markdown helpers for the docs tests: the pages, their fenced code blocks, their links and GitHub's heading anchors.

Plain-text parsing of the subset these pages use (CommonMark fences, inline links and images, reference
definitions, HTML href/src, ATX headings); written here because the checks need the source line of each item.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[2]
SKIP_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*skip:\s*(?P<reason>.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[^\s`]*)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(?P<text>.*?)\s*#*\s*$")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?(?P<target>[^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(?P<target>\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HTML_LINK = re.compile(r"(?:href|src)\s*=\s*\"(?P<target>[^\"]*)\"")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)\s*=\s*\"(?P<name>[^\"]+)\"|\sid\s*=\s*\"(?P<id>[^\"]+)\"")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")


@dataclass(frozen=True)
class CodeBlock:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip_reason: str | None


@dataclass(frozen=True)
class Link:
    path: Path
    line: int
    target: str


def doc_pages(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def code_blocks(text: str, path: Path) -> list[CodeBlock]:
    """Fenced code blocks with their language and, if the last non-blank line before the fence is the skip marker,
    its reason. Fences indented in a list item are dedented by the fence's indent."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, start = len(m["indent"]), m["fence"], i
        body, i = [], i + 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i].lstrip())
            i += 1
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP_MARKER.match(before)
        blocks.append(CodeBlock(path, start + 1, m["lang"].lower(), "\n".join(body) + "\n",
                                (skip["reason"] or "no reason given") if skip else None))
        i += 1
    return blocks


def prose_lines(text: str, inline_code: bool = False) -> list[str]:
    """The page's lines with fenced code blocks blanked and (unless `inline_code`) inline code spans removed (line
    numbers kept)."""
    out, fence = [], None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m["fence"]
            out.append("")
        elif fence is not None:
            if re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", line):
                fence = None
            out.append("")
        else:
            out.append(line if inline_code else _INLINE_CODE.sub("", line))
    return out


def links(text: str, path: Path) -> list[Link]:
    """Every link and image target in the prose (inline, reference definitions, HTML href/src)."""
    found = []
    for n, line in enumerate(prose_lines(text), start=1):
        for pattern in (_INLINE_LINK, _REFERENCE_DEF, _HTML_LINK):
            found += [Link(path, n, m["target"]) for m in pattern.finditer(line)]
    return found


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, everything but letters, marks, digits, '_', '-'
    and spaces removed, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a page: heading slugs (repeats get -1, -2, ... as on GitHub) and explicit HTML name/id."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(text, inline_code=True):
        m = _HEADING.match(line)
        if m:
            slug = github_slug(m["text"])
            out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
        for a in _HTML_ANCHOR.finditer(line):
            out.add(a["name"] or a["id"])
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """'file:line: target: why' for each relative link of `path` that does not resolve (file, folder or #anchor)."""
    text = path.read_text(encoding="utf-8")
    problems = []
    for link in links(text, path):
        target = link.target
        if not target or _SCHEME.match(target):
            continue  # external (http, https, mailto, ...): not checked offline
        file_part, _, anchor = target.partition("#")
        file_part = unquote(file_part)
        dest = path if not file_part else (root / file_part.lstrip("/") if file_part.startswith("/")
                                           else path.parent / file_part).resolve()
        where = f"{path.relative_to(root)}:{link.line}: {target}"
        if root.resolve() not in (dest.resolve(), *dest.resolve().parents):
            problems.append(f"{where}: points outside the repository")
        elif not dest.exists():
            problems.append(f"{where}: no such file or folder")
        elif anchor and dest.suffix.lower() == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{where}: no heading or anchor #{anchor} in {dest.name}")
    return problems
