"""benchmarks/gpu_check.py cannot rot: its CPU dry run runs end to end, writes the JSON the GPU run will write, and
its correctness numbers are real (a wrong implementation swapped in makes the check fail)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_check_kernels as kernels  # noqa: E402

from ceu_rl.objectives import ce_u_loss  # noqa: E402


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "gpu_check_dry.json"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, seconds


def test_dry_run_writes_every_section(dry_run):
    report, stdout, seconds = dry_run
    print(f"dry run: {seconds:.1f} s wall")
    assert report["mode"] == "dry-run" and report["device"] == "cpu"
    assert report["command"].startswith("python benchmarks/gpu_check.py --dry-run")
    assert {"torch", "trl", "transformers", "datasets", "liger-kernel"} <= set(report["versions"])
    assert "Frobenius" in report["error_measure"] and report["tolerance"] == {"float32": 1e-5, "bfloat16": 1e-3}
    for section in ("correctness", "speed", "trainers"):
        assert "error" not in report[section], report[section]
    cases = report["correctness"]
    assert len(cases) == 4 * 2 * 2  # 4 implementations x fp32/bf16 x 2 vocabularies
    checked = [c for c in cases if c["pass"] is not None]
    assert {c["name"] for c in checked} == {"ce_u_loss[torch]", "linear_ce_u_loss[torch]"}
    assert all("skipped" in c for c in cases if "triton" in c["name"])
    for case in checked:
        assert case["pass"], case
        assert case["confident_rows_label_margin"][0] > 17  # p_y really rounds to 1 in float32 on those rows
        grads = {"grad_logits"} if case["name"].startswith("ce_u") else {"grad_hidden", "grad_weight", "grad_bias"}
        assert set(case["errors"]) == {"value", "per_row_value"} | grads
        assert case["errors"]["per_row_value"]["ignored_rows_max_abs"] == 0.0
    for op, variants in (("ce_u_loss", {"cross_entropy", "ce_u_loss"}), ("linear_ce_u", {"cross_entropy",
                                                                                        "linear_ce_u"})):
        row = report["speed"][op][0]
        assert set(row["time_s"]) == variants and all(row["time_s"][v]["median"] > 0 for v in variants)
    assert report["speed"]["faster_path"]["ce_u_loss"]["points"] == []  # no Triton in the dry run
    trainers = report["trainers"]
    assert set(trainers["dpo"]["step_time_s"]) == {"trl_sigmoid", "ceu"}
    assert trainers["dpo"]["settings"]["ceu"]["loss_type"] in ("ceu", ["ceu"])  # TRL keeps a list
    assert trainers["dpo"]["settings"]["trl_sigmoid"]["trainer"] == "DPOTrainer"
    grpo = trainers["grpo"]["settings"]
    assert grpo["trl"]["trainer"] == "GRPOTrainer"
    assert (grpo["ceu_min"]["negative_objective"], grpo["ceu_min"]["ceu_exact_gradient"]) == ("ceu_min", False)
    assert (grpo["ceu_min_exact"]["negative_objective"], grpo["ceu_min_exact"]["ceu_exact_gradient"]) == ("ceu_min",
                                                                                                        True)
    assert grpo["pg"]["negative_objective"] == "pg"
    assert trainers["grpo"]["batch"]["negative_token_fraction"] == pytest.approx(0.5, abs=0.25)
    assert set(trainers["unlearn"]["step_time_s"]) == {"ce_u_fused_linear", "ce_u_from_logits", "ce_u_logprob_head"}
    goals = report["goals"]
    assert goals[0]["goal"].startswith("every correctness case") and goals[0]["pass"] is True
    assert all(g["pass"] is None for g in goals[1:])  # no time/memory verdicts from CPU timings of tiny sizes
    assert "PASS  every correctness case" in stdout


def _run_cases(monkeypatch, fn, dtypes=(torch.float32, torch.bfloat16)):
    monkeypatch.setitem(kernels.IMPLEMENTATIONS, "ce_u_loss[torch]", ("logits", "torch", fn))
    return {str(d).removeprefix("torch."): kernels.check_case("ce_u_loss[torch]", 1000, d, "cpu", 64, 64)
            for d in dtypes}


def test_true_implementation_passes(monkeypatch):
    cases = _run_cases(monkeypatch, lambda x, reduction: ce_u_loss(x["logits"], x["labels"], reduction=reduction))
    assert all(c["pass"] for c in cases.values())


def test_naive_log_one_minus_p_fails_on_confident_rows(monkeypatch):
    """-log(1 - p_y) + H(q) from softmax: right everywhere but where p_y rounds to 1 (the case CE-U is built for)."""
    def naive(x, reduction):
        z, y = x["logits"].float(), x["labels"]
        valid = y != -100
        y0 = torch.where(valid, y, torch.zeros_like(y))
        p_y = torch.softmax(z, -1).gather(1, y0[:, None]).squeeze(1)
        masked = z.detach().scatter(1, y0[:, None], float("-inf"))
        q = torch.softmax(masked, -1)
        entropy_q = -(q * torch.log_softmax(masked, -1).nan_to_num(0.0)).sum(-1)
        per = torch.where(valid, entropy_q - torch.log1p(-p_y), torch.zeros_like(p_y))
        return per if reduction == "none" else per.sum() / valid.sum()

    cases = _run_cases(monkeypatch, naive)
    for case in cases.values():
        assert case["pass"] is False
        assert case["errors"]["per_row_value"]["confident_rows"] == math.inf
        assert case["errors"]["per_row_value"]["all"] == math.inf


def test_scaled_gradient_fails_and_tolerances_are_per_dtype(monkeypatch):
    def scaled(factor):
        return lambda x, reduction: ce_u_loss(x["logits"], x["labels"], reduction=reduction) * factor

    off_by_1e2 = _run_cases(monkeypatch, scaled(1.01))
    assert not any(c["pass"] for c in off_by_1e2.values())
    assert off_by_1e2["float32"]["errors"]["grad_logits"]["all"] == pytest.approx(0.01, rel=0.01)
    off_by_1e4 = _run_cases(monkeypatch, scaled(1 + 1e-4))  # above float32's 1e-5, below bf16's 1e-3
    assert off_by_1e4["float32"]["pass"] is False and off_by_1e4["bfloat16"]["pass"] is True


def test_gradient_on_ignored_rows_fails(monkeypatch):
    def leaks(x, reduction):
        z, y = x["logits"], x["labels"]
        loss = ce_u_loss(z, y, reduction=reduction)
        extra = 1e-9 * z[0].float().sum()  # row 0 is ignored: any gradient there is a bug, however small
        return loss + (extra if reduction != "none" else 0.0)

    cases = _run_cases(monkeypatch, leaks, dtypes=(torch.float32,))
    case = cases["float32"]
    assert case["pass"] is False and case["ignored_rows_exactly_zero"] is False
    assert case["worst_error"] < case["tolerance"]  # caught by the exact-zero check, not by the norms


def test_relative_error_against_numbers_by_hand():
    x = torch.tensor([3.0, -4.0], dtype=torch.float64)
    assert kernels.relative_error(torch.tensor([3.0, -4.0]) * 1.001, x) == pytest.approx(1e-3, rel=1e-4)
    assert kernels.relative_error(torch.tensor([3.0, 0.0]), x) == pytest.approx(4 / 5)
    assert kernels.relative_error(torch.tensor([math.nan, 1.0]), x) == math.inf
    # a bf16 output equal to the correctly rounded reference scores 0, although it is 2^-9 away from the exact value
    y = torch.tensor([1 + 2**-9], dtype=torch.float64)
    assert kernels.relative_error(y.to(torch.bfloat16), y) == 0.0


def test_goals_and_faster_path_from_synthetic_rows():
    def timing(**medians):
        return {k: {"median": v} for k, v in medians.items()}

    speed = {"ce_u_loss": [{"n": 8192, "vocab": 32000, "time_s": timing(cross_entropy=1.0, ce_u_loss=4.0,
                                                                         ce_u_loss_triton=1.2),
                            "time_ratio_vs_cross_entropy": {"cross_entropy": 1.0, "ce_u_loss": 4.0,
                                                            "ce_u_loss_triton": 1.2}},
                           {"n": 8192, "vocab": 128256, "time_s": timing(cross_entropy=1.0, ce_u_loss=1.0,
                                                                          ce_u_loss_triton=1.4),
                            "time_ratio_vs_cross_entropy": {"cross_entropy": 1.0, "ce_u_loss": 1.0,
                                                            "ce_u_loss_triton": 1.4}}],
             "linear_ce_u": [{"n": 8192, "vocab": 32000, "hidden": 4096,
                              "time_s": timing(linear_ce_u=2.0, linear_ce_u_triton=1.25, liger_flce=1.0),
                              "peak_extra_mib": {"linear_ce_u": 90.0, "linear_ce_u_triton": 110.0,
                                                 "liger_flce": 100.0}}]}
    speed["faster_path"] = kernels.faster_paths(speed)
    assert [p["faster"] for p in speed["faster_path"]["ce_u_loss"]["points"]] == ["triton", "torch"]
    assert speed["faster_path"]["ce_u_loss"]["triton_faster_everywhere"] is False
    assert speed["faster_path"]["linear_ce_u"]["triton_faster_everywhere"] is True
    goals = gpu_check.goals({"mode": "gpu", "speed": speed, "trainers": {
        "grpo": {"reference_variant": "trl", "time_ratio": {"ceu_min": 1.04, "ceu_min_exact": 1.2},
                 "memory_ratio": {"ceu_min": 0.9, "ceu_min_exact": 1.0}}}})
    # Triton 1.2x (pass), 1.4x (fail); linear torch 2.0x (fail), triton 1.25x but 1.1x Liger's memory (fail);
    # GRPO ceu_min 1.04x / 0.9x (pass), exact 1.2x (fail)
    assert [g["pass"] for g in goals] == [True, False, False, False, True, False]


def test_an_implementation_that_raises_is_a_failed_case(monkeypatch):
    def broken(x, reduction):
        raise RuntimeError("kernel failed to compile")

    monkeypatch.setitem(kernels.IMPLEMENTATIONS, "ce_u_loss[torch]", ("logits", "torch", broken))
    cases = kernels.correctness("cpu", [1000], 64, 64, names=["ce_u_loss[torch]", "linear_ce_u_loss[torch]"])
    assert [c["pass"] for c in cases] == [False, False, True, True]  # the other implementation still checked
    assert "kernel failed to compile" in cases[0]["error"]
    goal = gpu_check.goals({"mode": "dry-run", "correctness": cases})[0]
    assert goal["pass"] is False and "ce_u_loss[torch] float32" in goal["detail"]
