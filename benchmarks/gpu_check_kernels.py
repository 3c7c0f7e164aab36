"""gpu_check, part (a): correctness of ce_u_loss and linear_ce_u_loss (torch and Triton paths) against a float64
reference, value and every gradient, on rows with p_y = 1 in float32 and on ignored rows.

Error measure (one number per output, pass if <= the tolerance of the input dtype: 1e-5 float32, 1e-3 bfloat16):

    err(got, ref) = || got - round_to(got.dtype, ref) ||_F / || ref ||_F

ref is the float64 autograd of the naive formulas (tests/objectives/reference.naive_unified) on the same inputs
(bf16 inputs are upcast exactly, so input rounding is not counted). Why this measure:
- Relative, in the Frobenius norm (the normwise error of numerical linear algebra): a gradient's entries span many
  orders of magnitude (p - q on a 128k vocabulary), so an element-wise relative error is dominated by entries that
  are 0 up to rounding; the norm weights every entry by its size, and a systematic error (a wrong row, a scaled
  gradient, a lost term) shows at its true relative size.
- Against the reference rounded to the output's dtype: a bf16 gradient cannot be closer to the exact value than its
  own rounding (unit roundoff 2^-8 = 3.9e-3; normwise floor measured 1.6-2.0e-3, above the 1e-3 goal); measured from
  the correctly rounded answer, a float32 computation rounded once scored 7e-8 to 3e-6 in the dry run (rare one-ulp
  flips at rounding boundaries), and an error in the computation scores its size. The unrounded error and that
  floor are recorded too.
- Norms over all rows could hide a bug confined to a few rows, so the rows with p_y = 1 (float32) get their own
  errors (per-row values from reduction="none" and the row gradients), and ignored rows must be exactly 0.
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from pathlib import Path

import torch

from ceu_rl.objectives import ce_u_loss, linear_ce_u_loss
from ceu_rl.objectives.linear_ce_u import _triton_unavailable_reason

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.objectives.reference import naive_unified  # noqa: E402  (the project's one float64 reference)

TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-3}
IGNORE = -100
# Every 8th row ignored, the next one with p_y = 1 in float32 (label logit far above the rest).
IGNORED_ROWS, CONFIDENT_ROWS = slice(0, None, 8), slice(1, None, 8)
CONFIDENT_LOGIT = 80.0


def _ce_u(implementation):
    return lambda x, reduction: ce_u_loss(x["logits"], x["labels"], reduction=reduction, implementation=implementation)


def _linear(implementation):
    return lambda x, reduction: linear_ce_u_loss(x["hidden"], x["weight"], x["labels"], bias=x["bias"],
                                                 reduction=reduction, implementation=implementation)


# name -> (input kind, implementation, fn(inputs, reduction) -> loss). Tests swap an entry for a wrong one.
IMPLEMENTATIONS = {
    "ce_u_loss[torch]": ("logits", "torch", _ce_u("torch")),
    "ce_u_loss[triton]": ("logits", "triton", _ce_u("triton")),
    "linear_ce_u_loss[torch]": ("linear", "torch", _linear("torch")),
    "linear_ce_u_loss[triton]": ("linear", "triton", _linear("triton")),
}


def logits_inputs(n, vocab, dtype, device, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(n, vocab, device=device, generator=gen) * 3
    labels = torch.randint(0, vocab, (n,), device=device, generator=gen)
    rows = torch.arange(n, device=device)[CONFIDENT_ROWS]
    logits[rows, labels[rows]] = CONFIDENT_LOGIT
    labels[IGNORED_ROWS] = IGNORE
    return {"logits": logits.to(dtype).requires_grad_(), "labels": labels}


def linear_inputs(n, vocab, width, dtype, device, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(n, width, device=device, generator=gen)
    weight = torch.randn(vocab, width, device=device, generator=gen) * (3 / width**0.5)
    bias = torch.randn(vocab, device=device, generator=gen) * 0.1
    labels = torch.randint(0, vocab, (n,), device=device, generator=gen)
    rows = torch.arange(n, device=device)[CONFIDENT_ROWS]
    w_y = weight[labels[rows]]
    hidden[rows] = w_y * (CONFIDENT_LOGIT / (w_y * w_y).sum(-1, keepdim=True))  # label logit 80, the rest ~N(0, 80^2/H)
    labels[IGNORED_ROWS] = IGNORE
    return {"hidden": hidden.to(dtype).requires_grad_(), "weight": weight.to(dtype).requires_grad_(),
            "bias": bias.to(dtype).requires_grad_(), "labels": labels}


def _leaves(inputs):
    return {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.requires_grad}


def _reference(inputs, device):
    """float64 value (mean), per-row values and gradients of every leaf, and on the confident rows the margin
    z_y - logsumexp_{k != y} z_k (p_y rounds to 1 in float32 above ~17: 1 - p_y = sigmoid(-margin) < 2^-24)."""
    leaves = {k: v.detach().to(device=device, dtype=torch.float64).requires_grad_() for k, v in _leaves(inputs).items()}
    labels = inputs["labels"].to(device)
    z = leaves["logits"] if "logits" in leaves else leaves["hidden"] @ leaves["weight"].T + leaves["bias"]
    value = naive_unified(z, labels)
    value.backward()
    per_row = naive_unified(z.detach(), labels, reduction="none")
    conf = torch.arange(len(labels), device=device)[CONFIDENT_ROWS]
    zc = z.detach()[conf]
    z_label = zc.gather(1, labels[conf].unsqueeze(1)).squeeze(1)
    margin = z_label - torch.logsumexp(zc.scatter(1, labels[conf].unsqueeze(1), float("-inf")), dim=1)
    return value.detach(), per_row, {k: v.grad for k, v in leaves.items()}, margin


def relative_error(got, ref):
    """||got - round(ref)||_F / ||ref||_F (see the module docstring); inf if got is not finite."""
    if not bool(torch.isfinite(got).all()):
        return math.inf
    rounded = ref.to(got.device).to(got.dtype).double()
    return float((got.detach().double() - rounded).norm() / ref.norm().clamp_min(1e-300))


def _errors(got, ref, rows_are_tokens):
    """Errors of one output: all entries, the confident rows, and ignored rows' largest |entry| (must be 0)."""
    ref = ref.to(got.device)
    out = {"all": relative_error(got, ref),
           "unrounded": float((got.detach().double() - ref).norm() / ref.norm().clamp_min(1e-300)),
           "rounding_floor": float((ref.to(got.dtype).double() - ref).norm() / ref.norm().clamp_min(1e-300))}
    if rows_are_tokens:
        out["confident_rows"] = relative_error(got[CONFIDENT_ROWS], ref[CONFIDENT_ROWS])
        out["ignored_rows_max_abs"] = float(got[IGNORED_ROWS].detach().abs().max())
    return out


def check_case(name, vocab, dtype, device, n, width):
    kind, implementation, fn = IMPLEMENTATIONS[name]
    dtype_name = str(dtype).removeprefix("torch.")
    case = {"name": name, "vocab": vocab, "dtype": dtype_name, "n": n, "device": device,
            "tolerance": TOLERANCE[dtype_name]}
    if kind == "linear":
        case["hidden"] = width
    if implementation == "triton" and device != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return {**case, "skipped": "Triton path: CUDA only (the dry run checks the torch paths)", "pass": None}
    reason = _triton_unavailable_reason(torch.device(device), torch.float32) if implementation == "triton" else None
    if reason is not None:  # the op would fall back to torch: checking it would not check the kernel
        return {**case, "error": f"Triton unavailable: {reason}", "worst_error": math.inf, "pass": False}
    inputs = logits_inputs(n, vocab, dtype, device) if kind == "logits" else linear_inputs(n, vocab, width, dtype,
                                                                                           device)
    value = fn(inputs, "mean")
    value.backward()
    per_row = fn(inputs, "none")
    try:
        ref_value, ref_rows, ref_grads, margin = _reference(inputs, device)
    except RuntimeError:  # e.g. a float64 reference too large for the device: compute it on the CPU
        ref_value, ref_rows, ref_grads, margin = _reference(inputs, "cpu")
    errors = {"value": {"all": relative_error(value.reshape(1), ref_value.reshape(1).to(value.device))},
              "per_row_value": _errors(per_row, ref_rows, True)}
    for key, leaf in _leaves(inputs).items():
        errors[f"grad_{key}"] = _errors(leaf.grad, ref_grads[key], rows_are_tokens=key in ("logits", "hidden"))
    worst = max(e[k] for e in errors.values() for k in ("all", "confident_rows") if k in e)
    ignored_zero = all(e.get("ignored_rows_max_abs", 0.0) == 0.0 for e in errors.values())
    case.update({"errors": errors, "worst_error": worst, "ignored_rows_exactly_zero": ignored_zero,
                 "confident_rows_label_margin": [float(margin.min()), float(margin.max())],
                 "pass": bool(worst <= case["tolerance"] and ignored_zero)})
    return case


def correctness(device, vocabs, n, width, names=None):
    cases = []
    for name in names or IMPLEMENTATIONS:
        for dtype in (torch.float32, torch.bfloat16):
            for vocab in vocabs:
                try:
                    cases.append(check_case(name, vocab, dtype, device, n, width))
                except Exception:  # e.g. a kernel that does not compile: a failed case, the others still run
                    cases.append({"name": name, "vocab": vocab, "dtype": str(dtype).removeprefix("torch."),
                                  "n": n, "device": device, "tolerance": TOLERANCE[str(dtype).removeprefix("torch.")],
                                  "error": traceback.format_exc()[-3000:], "worst_error": math.inf, "pass": False})
                c = cases[-1]
                print(f"  {c['name']:<26} V={vocab:<7} {c['dtype']:<9} "
                      + (f"skipped ({c['skipped']})" if "skipped" in c else
                         f"ERROR {c['error'].strip().splitlines()[-1]}" if "error" in c else
                         f"worst error {c['worst_error']:.2e} (tol {c['tolerance']:.0e}) "
                         f"{'PASS' if c['pass'] else 'FAIL'}"), flush=True)
                if device == "cuda":
                    torch.cuda.empty_cache()
    return cases


def speed(device, logits_points, linear_points, rounds, with_triton, with_liger):
    """Part (b): forward+backward time and peak memory, median of interleaved rounds, through the benchmarks'
    own point functions (bench_ce_u_loss.device_point, bench_linear_ce_u.device_point)."""
    import bench_ce_u_loss
    import bench_linear_ce_u

    logits_variants = dict(bench_ce_u_loss.CUDA_VARIANTS)
    linear_variants = dict(bench_linear_ce_u.CUDA_VARIANTS)
    triton_reason = _triton_unavailable_reason(torch.device(device), torch.float32)
    if not with_triton or triton_reason is not None:  # never time the torch fallback under the Triton name
        logits_variants.pop("ce_u_loss_triton")
        linear_variants.pop("linear_ce_u_triton")
    if not with_liger:
        linear_variants.pop("liger_flce")
    out = {"ce_u_loss": [], "linear_ce_u": []}
    jobs = [("ce_u_loss", (n, vocab), lambda n=n, v=vocab: bench_ce_u_loss.device_point(
                n, v, torch.bfloat16, rounds, logits_variants, device)) for n, vocab in logits_points]
    jobs += [("linear_ce_u", (n, vocab, width), lambda n=n, v=vocab, h=width: bench_linear_ce_u.device_point(
                 n, v, h, torch.bfloat16, rounds, linear_variants, device)) for n, vocab, width in linear_points]
    for op, size, job in jobs:
        try:
            out[op].append(job())
            _print_point(op, out[op][-1])
        except Exception:  # one point's failure (e.g. out of memory) must not cost the other points
            out.setdefault("errors", []).append({"op": op, "size": size, "error": traceback.format_exc()[-3000:]})
            print(out["errors"][-1]["error"], flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
    out["faster_path"] = faster_paths(out)
    if with_triton and triton_reason is not None:
        out["triton_not_measured"] = triton_reason
    return out


def faster_paths(speed_rows):
    """Issue 19 item 4: per point, which implementation of the same op was faster (median time), torch or triton."""
    pairs = {"ce_u_loss": ("ce_u_loss", "ce_u_loss_triton"), "linear_ce_u": ("linear_ce_u", "linear_ce_u_triton")}
    result = {}
    for op, (torch_name, triton_name) in pairs.items():
        rows = []
        for row in speed_rows[op]:
            t = row["time_s"]
            if triton_name not in t:
                continue
            ratio = t[triton_name]["median"] / t[torch_name]["median"]
            rows.append({"n": row["n"], "vocab": row["vocab"], "hidden": row.get("hidden"),
                         "triton_over_torch_time": ratio, "faster": "triton" if ratio < 1 else "torch"})
        result[op] = {"points": rows, "triton_faster_everywhere": bool(rows) and all(r["faster"] == "triton"
                                                                                    for r in rows)}
    return result


def _print_point(op, row):
    size = f"N={row['n']} V={row['vocab']}" + (f" H={row['hidden']}" if "hidden" in row else "")
    parts = [f"{k} {v['median'] * 1e3:.2f} ms" + (f" / {row['peak_extra_mib'][k]:.0f} MiB"
                                                   if row["peak_extra_mib"][k] is not None else "")
             for k, v in row["time_s"].items()]
    print(f"  {op} {size} {row['dtype']}: " + ", ".join(parts), flush=True)
