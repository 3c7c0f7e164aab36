"""The quantization attack: quantized weights equal their formula by hand and in float64, NF4 levels equal the published
ones, the model copy quantizes every linear layer but the head; where bitsandbytes is installed, the stand-in equals
its dequantized weights and `quantize_model` equals transformers' BitsAndBytesConfig loading."""

import math

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu.attacks import quantize as q
from ceu_rl.tofu.attacks.quantize import (NF4_CODE, fake_quantize_linear_weights, fake_quantize_tensor,
                                          quantization_robustness, quantize_model)

# The 16 NF4 levels as published with bitsandbytes (functional.py, `get_4bit_type("nf4")`; QLoRA appendix E)
PUBLISHED_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                 -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                 0.7229568362236023, 1.0]


def test_nf4_code_book_is_the_published_one():
    assert list(NF4_CODE) == PUBLISHED_NF4


def test_nf4_by_hand():
    # one block of 4: absmax 2; w/2 = 1, -1, 0.25, 0.05 -> levels 1, -1, 0.24611..., 0.07958... (nearest; 0.05 is
    # 0.0296 from 0.07958 and 0.05 from 0)
    w = torch.tensor([2.0, -2.0, 0.5, 0.1])
    expected = torch.tensor([2.0, -2.0, 2 * 0.24611230194568634, 2 * 0.07958029955625534])
    assert torch.equal(fake_quantize_tensor(w, 4, group_size=4, scheme="nf4"), expected)


def test_int8_per_row_by_hand():
    # row absmax 1: q = round(127 w) = 127, -64 (-63.5, half to even), 32 (31.75), 13 (12.7); w -> q / 127
    w = torch.tensor([[1.0, -0.5, 0.25, 0.1], [0.0, 0.0, 0.0, 0.0]])
    out = fake_quantize_tensor(w, 8, group_size=None, scheme="int")
    assert out[0].tolist() == pytest.approx([1.0, -64 / 127, 32 / 127, 13 / 127], abs=1e-7)
    assert torch.equal(out[1], torch.zeros(4))  # an all-zero group stays zero, no NaN


def _reference(w, bits, group_size, scheme):
    """Float64, one value at a time: the module docstring's formula, written again."""
    flat = [float(x) for x in w.reshape(-1)]
    size = group_size or w.shape[-1]
    out = []
    for start in range(0, len(flat), size):
        block = flat[start : start + size]
        a = max(abs(x) for x in block) or 1.0
        for x in block:
            if scheme == "nf4":
                out.append(min(PUBLISHED_NF4, key=lambda level: abs(x / a - level)) * a)
            else:
                qmax = 2 ** (bits - 1) - 1
                out.append(max(-qmax, min(qmax, round(x * qmax / a))) * a / qmax)
    return torch.tensor(out, dtype=torch.float64).reshape(w.shape)


@pytest.mark.parametrize("bits, group_size, scheme", [(4, 64, "nf4"), (4, 16, "nf4"), (4, 8, "int"),
                                                       (8, None, "int"), (3, 5, "int")])
def test_matches_float64_formula(bits, group_size, scheme):
    torch.manual_seed(bits)
    w = torch.randn(6, 40)  # 240 values: blocks of 64 or 16 leave a partial last block
    out = fake_quantize_tensor(w, bits, group_size, scheme).double()
    assert torch.allclose(out, _reference(w, bits, group_size, scheme), rtol=0, atol=1e-6)
    if scheme == "nf4":  # and each value is a code level times its block's absmax
        assert len(torch.unique(out)) <= 16 * math.ceil(w.numel() / group_size)


@pytest.mark.parametrize("kwargs", [dict(bits=8, scheme="nf4"), dict(bits=4, scheme="int8"), dict(group_size=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        fake_quantize_tensor(torch.ones(4, 4), **{"bits": 4, "group_size": 2, "scheme": "nf4", **kwargs})


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("quant-tiny"), ["a b c d e f g"] * 10, vocab_size=280,
                           hidden_size=64, num_layers=2)


def test_model_copy_quantizes_every_linear_but_the_head(tiny_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = fake_quantize_linear_weights(model, bits=4, group_size=64)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())  # the input is untouched
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 * 7 + 1
    assert quantized.quantization_info["quantized_linears"] == len(linears) - 1
    state = quantized.state_dict()
    for name in linears:
        w = original[f"{name}.weight"]
        expected = w if name == "lm_head" else _reference(w, 4, 64, "nf4").float()
        assert torch.allclose(state[f"{name}.weight"], expected, atol=1e-6), name
    assert torch.equal(state["model.embed_tokens.weight"], original["model.embed_tokens.weight"])
    with_head = fake_quantize_linear_weights(model, bits=4, group_size=64, skip_modules=())
    assert not torch.equal(with_head.lm_head.weight, model.lm_head.weight)


def test_copies_run_their_own_weights_when_forward_is_patched(tiny_path):
    """UnlearnTrainer (and accelerate) patch `model.forward` with a closure over the original bound forward; a plain
    deepcopy of such a model computes with the original's weights. The attack copies must not."""
    import functools
    import types

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    inner = model.forward

    @functools.wraps(type(model).forward)
    def patched(self, *args, **kwargs):
        return inner(*args, **kwargs)

    model.forward = types.MethodType(patched, model)
    ids = torch.tensor([[1, 5, 9, 17, 33]])
    quantized = fake_quantize_linear_weights(model, bits=4, group_size=64)
    with torch.no_grad():
        original, copy_logits = model(ids).logits, quantized(ids).logits
        reference = fake_quantize_linear_weights(AutoModelForCausalLM.from_pretrained(tiny_path), 4, 64)(ids).logits
    assert not torch.equal(original, copy_logits)
    assert torch.equal(copy_logits, reference)


def test_quantize_model_fake_records_method(tiny_path, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    monkeypatch.setattr(q, "bitsandbytes_available", lambda: False)
    four = quantize_model(model, 4, method="auto")
    assert four.quantization_info["method"] == "fake" and four.quantization_info["scheme"] == "nf4"
    eight = quantize_model(model, 8, method="auto")
    assert eight.quantization_info == {**eight.quantization_info, "scheme": "int", "group_size": None}
    with pytest.raises(ValueError, match="bitsandbytes package"):
        quantize_model(model, 4, method="bitsandbytes")
    with pytest.raises(ValueError, match="4 or 8"):
        quantize_model(model, 3)


def test_quantization_robustness():
    assert quantization_robustness(0.2, 0.8) == 0.25  # 4x more knowledge after quantization
    assert quantization_robustness(0.5, 0.4) == 1.0  # less after: nothing came back
    assert quantization_robustness(0.0, 0.0) == 1.0
    with pytest.raises(ValueError):
        quantization_robustness(-0.1, 0.2)


# --- agreement with bitsandbytes, where it is installed (`pip install bitsandbytes`: it runs on CPU) ---


def test_stand_in_equals_bitsandbytes_nf4_and_int8():
    bnb = pytest.importorskip("bitsandbytes")
    F = bnb.functional
    assert F.get_4bit_type("nf4", device="cpu").tolist() == PUBLISHED_NF4
    torch.manual_seed(0)
    w = torch.randn(64, 96)
    packed, state = F.quantize_4bit(w[:, :64].contiguous(), blocksize=64, quant_type="nf4")
    assert torch.equal(F.dequantize_4bit(packed, state), fake_quantize_tensor(w[:, :64], 4, 64, "nf4"))
    # LLM.int8 weights: bitsandbytes casts to fp16, then row-wise absmax int8; dequantized = CB * SCB / 127
    layer = bnb.nn.Linear8bitLt(96, 64, bias=False, has_fp16_weights=False)
    layer.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
    layer = layer.to("cpu")
    dequantized = layer.weight.data.float() * layer.weight.SCB[:, None] / 127
    mine = fake_quantize_tensor(w.half().float(), 8, None, "int")
    assert torch.allclose(dequantized, mine, rtol=1e-6, atol=0)


def test_bitsandbytes_cpu_4bit_refuses_rows_off_the_block_grid():
    pytest.importorskip("bitsandbytes")
    model = nn.Sequential(nn.Linear(96, 8))
    with pytest.raises(ValueError, match="multiple of 64"):
        quantize_model(model, 4, method="bitsandbytes")
    assert quantize_model(model, 8, method="bitsandbytes").quantization_info["quantized_linears"] == 1


@pytest.mark.parametrize("bits", [4, 8])
def test_quantize_model_equals_transformers_loading(tiny_path, bits):
    """Same quantized weights as transformers' BitsAndBytesConfig loading (what the papers ran), same head left out.
    The logits agree to ~1e-3, not bit for bit: transformers repacks 4-bit CPU weights for its own matmul kernel,
    while the layers here multiply by the dequantized weight (exactly x @ W_q^T)."""
    bnb = pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4") if bits == 4 else \
        BitsAndBytesConfig(load_in_8bit=True)
    reference = AutoModelForCausalLM.from_pretrained(tiny_path, quantization_config=config, device_map="cpu")
    mine = quantize_model(AutoModelForCausalLM.from_pretrained(tiny_path), bits, method="bitsandbytes")
    assert mine.quantization_info["method"] == "bitsandbytes"
    assert type(mine.lm_head) is nn.Linear and type(reference.lm_head) is nn.Linear
    layers = [n for n, m in reference.named_modules() if "Linear" in type(m).__name__ and n != "lm_head"]
    assert len(layers) == mine.quantization_info["quantized_linears"] == 14
    for name in layers:
        a, b = reference.get_submodule(name).weight, mine.get_submodule(name).weight
        if bits == 4:
            dequantized = bnb.functional.dequantize_4bit(b.data, b.quant_state)
            assert torch.equal(bnb.functional.dequantize_4bit(a.data, a.quant_state), dequantized), name
            x = torch.randn(3, dequantized.shape[1])
            with torch.no_grad():
                assert torch.allclose(mine.get_submodule(name)(x), x @ dequantized.T, atol=1e-5)
        else:
            assert torch.equal(a.data, b.data) and torch.equal(a.SCB, b.SCB), name
    ids = torch.tensor([[1, 5, 9, 17, 33]])
    with torch.no_grad():
        assert torch.allclose(mine(ids).logits, reference(ids).logits, atol=1e-2)
        if bits == 4:  # the stand-in's weights are bitsandbytes' dequantized ones, so the logits match closely
            fake = quantize_model(AutoModelForCausalLM.from_pretrained(tiny_path), 4, method="fake")
            assert torch.allclose(fake(ids).logits, mine(ids).logits, atol=1e-5)
