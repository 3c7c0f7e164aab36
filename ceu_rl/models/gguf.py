"""Any GGUF checkpoint as a plain float32 transformers model, and as a Hugging Face folder every CLI takes as --model.

transformers' GGUF loader (with the `gguf` package) dequantizes the weights, but the model it returns cannot be saved
("quantized with GGUF and not serializable"), and GGUF tokenizer metadata can name the wrong end-of-sequence token:
SmolLM2's names `<|im_start|>` while its chat turns end with `<|im_end|>` (its generation config's eos, id 2), so a
generation never stops before max_new_tokens. `load_gguf` returns a plain model (same config without the
quantization entry, same state dict) and a tokenizer whose eos and pad are the generation config's eos.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

GGUF_INSTALL = 'pip install "gguf>=0.10"'


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as err:
        raise ImportError(f"Loading a GGUF checkpoint needs the `gguf` package: {GGUF_INSTALL}") from err


def fix_chat_end_token(tokenizer, eos_token_id: int | None) -> None:
    """Make the tokenizer's eos (and pad, when it has none or it equals the old eos) the model's generation eos.

    The GGUF's generation config is the authority: it is what `generate` stops on, and chat templates end every
    turn with it, so answer-only training (`encode_qa` appends `tokenizer.eos_token_id`) teaches the same token that
    stops a generation."""
    if eos_token_id is None:
        return
    eos = tokenizer.convert_ids_to_tokens(int(eos_token_id))
    if tokenizer.eos_token != eos:
        old = tokenizer.eos_token
        tokenizer.eos_token = eos
        if tokenizer.pad_token is None or tokenizer.pad_token == old:
            tokenizer.pad_token = eos
    if tokenizer.pad_token is None:
        tokenizer.pad_token = eos
    template = getattr(tokenizer, "chat_template", None)
    if template and eos not in template:
        warnings.warn(f"The chat template never writes the eos token {eos!r}: check how chat turns end.", stacklevel=2)


def load_gguf(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a GGUF file: dequantized to `dtype`, a plain (saveable) `AutoModelForCausalLM`, the
    tokenizer's eos / pad set to the chat end token. The weights are the quantized weights dequantized, not the
    original checkpoint's: report results on them as such."""
    _require_gguf()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No GGUF file at {path}: pass the path of a .gguf file.")
    folder, name = str(path.parent), path.name
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized: a plain model, saveable
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # tied embeddings: lm_head.weight may be absent from one side; anything else is a conversion error
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {path}: missing {missing}, unexpected {unexpected}.")
    model.tie_weights()
    model.generation_config = quantized.generation_config
    del quantized
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    fix_chat_end_token(tokenizer, model.generation_config.eos_token_id)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def gguf_to_folder(path: str | os.PathLike, out: str | os.PathLike, source: dict | None = None) -> str:
    """Dequantize once and save a plain Hugging Face folder (config, safetensors, tokenizer with its chat template,
    generation config) at `out`; written to a temporary folder first and renamed, so a reader never sees half of it.
    `source` (e.g. package and version) is kept in `ceu_rl_source.json` beside the weights."""
    out = Path(out)
    model, tokenizer = load_gguf(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the folder is a model cache others read
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"gguf": str(Path(path).resolve()), "gguf_bytes": Path(path).stat().st_size,
                "dequantized_to": "float32", **(source or {})}
        (tmp / "ceu_rl_source.json").write_text(json.dumps(info, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out)
