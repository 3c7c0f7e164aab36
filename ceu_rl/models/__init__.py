"""Real pretrained models without a hub: GGUF checkpoints as plain transformers models and folders.

    from ceu_rl.models import smollm2
    model, tokenizer = smollm2()        # SmolLM2-135M-Instruct, float32, eos = <|im_end|>
    path = smollm2_path()               # its HF folder: --model for every recipe and CLI

`python -m ceu_rl.models smollm2` prints that folder; `python -m ceu_rl.models gguf FILE --out DIR` converts any GGUF.
"""

from .gguf import fix_chat_end_token, gguf_to_folder, load_gguf
from .packaged import smollm2, smollm2_gguf, smollm2_path

__all__ = ["fix_chat_end_token", "gguf_to_folder", "load_gguf", "smollm2", "smollm2_gguf", "smollm2_path"]
