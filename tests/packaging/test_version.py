"""One version, written in ceu_rl/__init__.py: pyproject.toml reads it, CITATION.cff and the CHANGELOG follow it;
and the core requirements carry lower bounds only (TRL excepted: its private methods are overridden)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import ceu_rl

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml with tomllib")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_written_once():
    version = Version(ceu_rl.__version__)  # PEP 440
    project = _pyproject()
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ceu_rl.__version__"}
    cff = re.search(r"^version:\s*\"?([^\s\"]+)", (ROOT / "CITATION.cff").read_text(), re.M)
    assert cff and cff.group(1) == ceu_rl.__version__
    first_release = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert first_release and first_release.group(1) == version.base_version


def test_core_requirements_have_no_caps():
    reqs = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    capped = [str(r) for r in reqs if r.name != "trl" and any(s.operator in ("<", "<=", "==", "~=", "===")
                                                              for s in r.specifier)]
    assert capped == [], "caps belong to the test environment (run.sh), not to the library"
    assert all(r.specifier for r in reqs), "every core requirement has a lower bound"
