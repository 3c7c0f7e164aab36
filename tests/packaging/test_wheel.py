"""The built wheel: what it ships, and that it works installed (not editable) in a fresh venv.

Cost kept low: the wheel is built without build isolation from a copy of the library's sources, and the fresh venv
(no pip, no site packages) gets only the wheel (`pip install --no-deps --target`); its dependencies (torch, TRL,
transformers: ~1 GB) are reached through a .pth file listing this environment's site-packages, appended after the
venv's own, so `ceu_rl` comes from the wheel and nothing is downloaded. The .pth does not activate this
environment's editable install of ceu_rl (a .pth inside a directory added that way is not processed). That the
wheel's declared requirements hold is checked against this environment. CI's second environment (.ci/run) installs
the wheel with its dependencies resolved by pip and runs the whole suite on it (`test_installed_from_wheel`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import site
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import ceu_rl

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _setuptools_version() -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in metadata.version("setuptools").split(".")[:2])
    except metadata.PackageNotFoundError:
        return (0,)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if _setuptools_version() < (77,):
        pytest.skip("building without isolation needs setuptools >= 77 (pyproject's build requirement) here")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ceu_rl", src / "ceu_rl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(src)], check=True, capture_output=True, text=True)
    (whl,) = dist.glob("ceu_rl-*.whl")
    return whl


def _metadata(whl: Path) -> list[str]:
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return z.read(name).decode().splitlines()


def test_wheel_ships_the_library_and_the_tofu_data_only(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert {n.split("/")[0] for n in names} == {"ceu_rl", f"ceu_rl-{ceu_rl.__version__}.dist-info"}
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ceu_rl/tofu/data").rglob("*") if p.is_file()}
    assert len(shipped) > 25 and shipped <= names, sorted(shipped - names)[:5]
    assert f"ceu_rl-{ceu_rl.__version__}.dist-info/licenses/ceu_rl/tofu/data/LICENSE" in names


def test_wheel_metadata_version_and_requirements(wheel):
    lines = _metadata(wheel)
    assert f"Version: {ceu_rl.__version__}" in lines
    reqs = [Requirement(line.split(": ", 1)[1]) for line in lines if line.startswith("Requires-Dist: ")]
    core = {r.name.lower(): r for r in reqs if r.marker is None}
    assert {"torch", "trl", "transformers", "datasets"} <= set(core)
    assert str(core["trl"].specifier) == "==1.16.*"
    # no caps from the CPU test environment (transformers < 5.18 lives in run.sh)
    caps = {n: str(r.specifier) for n, r in core.items()
            if n != "trl" and any(s.operator in ("<", "<=", "==", "~=", "===") for s in r.specifier)}
    assert caps == {}
    for name, req in core.items():  # what the wheel declares, this working environment satisfies
        assert req.specifier.contains(metadata.version(name), prereleases=True), (name, metadata.version(name))


def test_wheel_installs_into_a_fresh_venv_and_trains(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv_site,) = (venv / "lib").glob("python3*/site-packages")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(venv_site), str(wheel)],
                   check=True, capture_output=True, text=True)
    (venv_site / "_dependencies_of_the_test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    out = subprocess.run([str(venv / "bin" / "python"), "-I", str(Path(__file__).with_name("wheel_smoke.py")),
                          str(venv), str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["from_wheel"], result["ceu_rl_file"]
    assert result["version"] == result["dist_version"] == ceu_rl.__version__
    assert result["data_in_venv"] and result["forget01_rows"] == 40 and result["retain90_log"]
    assert result["global_step"] == 2 and len(result["losses"]) == 2
    assert all(math.isfinite(x) for x in result["losses"] + result["ceu_terms"])  # CE-U's term logged: loss_type ceu


def test_installed_from_wheel():
    """CI's second environment (CEU_EXPECT_WHEEL=1): the suite ran on ceu_rl installed from the wheel."""
    if os.environ.get("CEU_EXPECT_WHEEL") != "1":
        pytest.skip("only in CI's wheel environment (CEU_EXPECT_WHEEL=1, see .ci/run)")
    here = Path(ceu_rl.__file__).resolve()
    assert ROOT not in here.parents, f"ceu_rl imported from the clone ({here}), not from the installed wheel"
    direct_url = json.loads(metadata.distribution("ceu-rl").read_text("direct_url.json") or "{}")
    assert not direct_url.get("dir_info", {}).get("editable", False)
