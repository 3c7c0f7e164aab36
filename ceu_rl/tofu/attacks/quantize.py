"""Quantization attack: does knowledge that unlearning suppressed come back when the weights are rounded to 4 or 8 bits?

Reference: Zhang et al., "Catastrophic Failure of LLM Unlearning via Quantization" (arXiv 2410.16454; code:
zzwjames/FailureLLMUnlearning): unlearning methods with a utility term keep ~21% of the forgotten knowledge at full
precision and ~83% after 4-bit quantization, because their updates (1B-7B models, lr ~1e-5) are smaller than one
quantization step, so rounding maps the unlearned weights back onto the original model's grid. Their code loads the
model with `transformers`' `BitsAndBytesConfig(load_in_4bit=True)` (or `load_in_8bit=True`): bitsandbytes, every
`nn.Linear` but the output head (`lm_head`, which `transformers` leaves in full precision), 4-bit with transformers'
default quant type ("fp4"), blocks of 64, no double quantization. OpenUnlearning's meta-evaluation (arXiv 2506.12618)
uses 4-bit NF4 and scores a metric m (higher = more knowledge) by Q = min(m_before / m_after, 1).

`quantize_model` does the same on an in-memory model: bitsandbytes' `Linear4bit` (NF4 by default, "fp4" as the
paper's code) or `Linear8bitLt` (LLM.int8: int8 row-wise absmax weights, int8 activations with outlier columns above
6.0 kept in fp16, as `transformers` sets it up) in place of every `nn.Linear` except `lm_head` (`skip_modules=()`
quantizes it too). bitsandbytes >= 0.48 runs both on CPU (checked with 0.50.2 and torch 2.13 CPU; its CPU 4-bit
path is refused for layers whose in_features is not a multiple of 64, which its native kernel mis-dequantizes,
`_check_bnb_cpu_4bit`). Where it is not
installed, `method="auto"` falls back to `fake_quantize_linear_weights`, a round-to-nearest group-wise fake
quantization that is documented as a stand-in and records itself as `method="fake"`:
  NF4:  per block of 64 consecutive weights (row-major), absmax a = max |w|; w -> NF4[argmin_j |w / a - NF4[j]|] * a,
        NF4 the 16 levels of bitsandbytes (QLoRA, Dettmers et al. 2023). Equal to bitsandbytes' dequantized weights.
  int:  symmetric absmax per group (group_size=None: per output row); q = round(w * qmax / a) clipped to
        [-qmax, qmax], qmax = 2^(bits-1) - 1; w -> q * a / qmax. At 8 bits per row this is LLM.int8's weight
        quantization; bitsandbytes first casts the weight to fp16 and also quantizes the activations, which the
        stand-in does not.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from collections.abc import Sequence

import torch
from torch import nn

# bitsandbytes' NF4 code book (`bitsandbytes.functional.get_4bit_type("nf4")`; QLoRA, appendix E)
NF4_CODE = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
            -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
            0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023,
            1.0)
SCHEMES = ("nf4", "int")
METHODS = ("auto", "bitsandbytes", "fake")
DEFAULT_SKIP = ("lm_head",)


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def _groups(weight: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, int]:
    """Row-major blocks of `group_size` values (float32), the last zero-padded (zeros leave a block's absmax as it
    is); group_size=None: one group per row of the last dimension."""
    w = weight.detach().float()
    if group_size is None:
        return w.reshape(-1, w.shape[-1]), 0
    if group_size < 1:
        raise ValueError(f"group_size={group_size} must be a positive integer (or None: one group per row).")
    flat = w.reshape(-1)
    pad = (-flat.numel()) % group_size
    return torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, group_size), pad


def fake_quantize_tensor(weight: torch.Tensor, bits: int = 4, group_size: int | None = 64,
                         scheme: str = "nf4") -> torch.Tensor:
    """The dequantized value of every weight after round-to-nearest group-wise quantization (module docstring)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not one of {SCHEMES}.")
    if scheme == "nf4" and bits != 4:
        raise ValueError(f"scheme='nf4' is a 4-bit code book; got bits={bits} (use scheme='int' for other widths).")
    if not 2 <= bits <= 16:
        raise ValueError(f"bits={bits} must lie in [2, 16].")
    groups, pad = _groups(weight, group_size)
    absmax = groups.abs().amax(dim=1, keepdim=True)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))  # an all-zero group stays zero
    if scheme == "nf4":
        code = torch.tensor(NF4_CODE, dtype=torch.float32, device=groups.device)
        index = ((groups / scale).unsqueeze(-1) - code).abs().argmin(dim=-1)
        out = code[index] * scale
    else:
        qmax = 2 ** (bits - 1) - 1
        out = torch.round(groups * (qmax / scale)).clamp(-qmax, qmax) * scale / qmax
    out = out.reshape(-1)[: out.numel() - pad] if pad else out
    return out.reshape(weight.shape).to(weight.dtype)


def _linears(model: nn.Module, skip_modules: Sequence[str]):
    """(parent, attribute name, module) of every nn.Linear whose name's last part is not in `skip_modules`."""
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear) and child_name not in skip_modules:
                yield module, child_name, child


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy that runs its own weights. A forward patched onto the instance (UnlearnTrainer's fused-loss forward,
    accelerate's fp32 output wrapper) closes over the *original* model's bound forward, which `copy.deepcopy` does not
    rebind: the copy would silently compute with the original's weights. Such patches are dropped from the copy (the
    class forward, bound to the copy, is what they wrap)."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        module.__dict__.pop("forward", None)
        module.__dict__.pop("_original_forward", None)
    return copied


def fake_quantize_linear_weights(model: nn.Module, bits: int = 4, group_size: int | None = 64, scheme: str = "nf4",
                                 skip_modules: Sequence[str] = DEFAULT_SKIP) -> nn.Module:
    """A copy of `model` whose nn.Linear weights (not biases, not `skip_modules`) are fake-quantized in place."""
    quantized = copy_model(model)
    count = 0
    with torch.no_grad():
        for _, _, linear in _linears(quantized, skip_modules):
            linear.weight.copy_(fake_quantize_tensor(linear.weight, bits, group_size, scheme))
            count += 1
    quantized.quantization_info = {"method": "fake", "bits": bits, "scheme": scheme, "group_size": group_size,
                                   "quantized_linears": count, "skipped": list(skip_modules)}
    return quantized


def _bnb_linear(linear: nn.Linear, bits: int, quant_type: str, compute_dtype: torch.dtype) -> nn.Module:
    """The bitsandbytes layer that `transformers`' BitsAndBytesConfig(load_in_4bit / load_in_8bit) puts in place of
    `linear`, quantized on its device by the `.to` call (bitsandbytes quantizes when a parameter is moved)."""
    import bitsandbytes as bnb

    device, has_bias = linear.weight.device, linear.bias is not None
    weight = linear.weight.data.detach().cpu()
    if bits == 4:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias, compute_dtype=compute_dtype,
                                  compress_statistics=False, quant_type=quant_type, device="cpu")
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=False, quant_type=quant_type,
                                         blocksize=64)
    else:
        # LLM.int8 logs "inputs will be cast from float32 to float16" on every forward of a float32 model
        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias, has_fp16_weights=False,
                                    threshold=6.0, device="cpu")
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.data.detach().cpu(), requires_grad=False)
    return layer.to(device)


def _check_bnb_cpu_4bit(model: nn.Module, bits: int, skip_modules: Sequence[str]) -> None:
    """bitsandbytes 0.50's native CPU 4-bit dequantization reads the blocks of a weight row by row, while its
    quantization packs them over the flattened weight: a layer whose in_features is not a multiple of 64 comes back
    scrambled (seen with 0.50.2: max error 2.0 instead of 0.45 on a 64 x 96 normal weight). Refuse such a model."""
    odd = [f"{type(p).__name__}.{n} ({m.in_features})" for p, n, m in _linears(model, skip_modules)
           if m.weight.device.type == "cpu" and m.in_features % 64]
    if bits == 4 and odd:
        raise ValueError(f"bitsandbytes 4-bit on CPU mis-dequantizes linear layers whose in_features is not a "
                         f"multiple of 64: {odd[:3]}. Use method='fake' (equal to bitsandbytes' flat blocks) or a GPU.")


def quantize_model(model: nn.Module, bits: int = 4, method: str = "auto", quant_type: str = "nf4",
                   group_size: int | None = 64, skip_modules: Sequence[str] = DEFAULT_SKIP,
                   compute_dtype: torch.dtype = torch.float32) -> nn.Module:
    """A quantized copy of `model`: every nn.Linear but `skip_modules` (default: the output head, as `transformers`
    does) at `bits` = 4 or 8. `method`: "bitsandbytes", "fake" (the stand-in) or "auto" (bitsandbytes when
    installed). `quant_type`: "nf4" or "fp4" (bitsandbytes 4-bit), "int" (stand-in only). The copy's
    `quantization_info` dict records the method that ran; `compute_dtype`: bitsandbytes 4-bit matmul dtype
    (transformers' default, float32)."""
    if bits not in (4, 8):
        raise ValueError(f"bits={bits}: the attack quantizes to 4 or 8 bits (fake_quantize_linear_weights takes any).")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}.")
    if method == "auto":
        method = "bitsandbytes" if bitsandbytes_available() and quant_type != "int" else "fake"
    if method == "bitsandbytes":
        if not bitsandbytes_available():
            raise ValueError("method='bitsandbytes' needs the bitsandbytes package (pip install 'bitsandbytes>=0.48'; "
                             "it runs on CPU), or use method='fake' for the documented stand-in.")
        if bits == 4 and quant_type not in ("nf4", "fp4"):
            raise ValueError(f"quant_type={quant_type!r}: bitsandbytes 4-bit takes 'nf4' or 'fp4'.")
        _check_bnb_cpu_4bit(model, bits, skip_modules)
        quantized = copy_model(model)
        count = 0
        for parent, name, linear in list(_linears(quantized, skip_modules)):
            setattr(parent, name, _bnb_linear(linear, bits, quant_type, compute_dtype))
            count += 1
        import bitsandbytes as bnb

        quantized.quantization_info = {"method": "bitsandbytes", "bitsandbytes": bnb.__version__, "bits": bits,
                                       "quant_type": quant_type if bits == 4 else "llm_int8", "blocksize": 64,
                                       "quantized_linears": count, "skipped": list(skip_modules)}
        return quantized
    if quant_type == "fp4":
        raise ValueError("quant_type='fp4' is bitsandbytes-only; the stand-in has 'nf4' (4-bit) and 'int'.")
    scheme = "nf4" if bits == 4 and quant_type == "nf4" else "int"
    return fake_quantize_linear_weights(model, bits, group_size if bits == 4 else None, scheme, skip_modules)


def quantization_robustness(before: float, after: float) -> float:
    """OpenUnlearning's robustness to quantization of a metric m >= 0 with higher = more knowledge:
    Q = min(m_before / m_after, 1) (1: nothing came back; m_after = 0 gives 1)."""
    if not (before >= 0 and after >= 0):
        raise ValueError(f"before={before}, after={after}: Q is defined for metrics >= 0 (higher = more knowledge); "
                         "negate or complement a metric of the other direction first.")
    return 1.0 if after == 0 else min(before / after, 1.0)
