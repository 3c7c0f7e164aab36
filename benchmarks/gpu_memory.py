"""Peak GPU memory of TOFU unlearning at real scale (run on a GPU; random weights of the real architectures, since the
point is memory, not results).

    python benchmarks/gpu_memory.py --out benchmarks/results/gpu_memory.json
Llama-3.2-1B architecture: full fine-tuning (bf16 weights, AdamW), objectives ce_u (no reference) and npo (frozen
reference copy); Llama-2-7B architecture: LoRA r=16 with ce_u. Batch 4 x 512 tokens (prompt + answer), gradient
checkpointing, 3 optimizer steps; torch.cuda.max_memory_allocated from after the model is built (the frozen NPO
reference copy and optimizer states included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM

from ceu_rl import UnlearnConfig, UnlearnTrainer
from ceu_rl.tiny_models import train_tokenizer

ARCHS = {
    "Llama-3.2-1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "Llama-2-7B": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
}
RUNS = [("Llama-3.2-1B", "ce_u", False), ("Llama-3.2-1B", "npo", False), ("Llama-3.2-1B", "ga", False),
        ("Llama-2-7B", "ce_u", True), ("Llama-2-7B", "npo", True)]


def _data(tokenizer, n=16):
    words = "the author was born in a small town and wrote many novels about".split()
    answer = " ".join(words[i % len(words)] for i in range(1200))
    ids = tokenizer(answer)["input_ids"]
    answer = tokenizer.decode(ids[:470])  # ~470 answer tokens + prompt: about 512 in all
    return Dataset.from_dict({"question": [f"Question number {i} about the author?" for i in range(n)],
                              "answer": [answer] * n})


def measure(arch, objective, lora, tokenizer):
    torch.cuda.empty_cache()
    config = LlamaConfig(**ARCHS[arch], max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.set_default_dtype(torch.bfloat16)  # build the weights in bf16 directly (no fp32 transient)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    weights_gib = torch.cuda.memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    peft = None
    if lora:
        from peft import LoraConfig

        peft = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                          task_type="CAUSAL_LM")
    args = UnlearnConfig(output_dir=tempfile.mkdtemp(), objective=objective, bf16=True, per_device_train_batch_size=4,
                         max_steps=3, learning_rate=1e-5, gradient_checkpointing=True, optim="adamw_torch",
                         save_strategy="no", prompt_format="plain", max_length=512, logging_steps=1,
                         disable_tqdm=True)
    data = _data(tokenizer)
    trainer = UnlearnTrainer(model=model, args=args, forget_dataset=data, retain_dataset=data,
                             processing_class=tokenizer, peft_config=peft)
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    row = {"arch": arch, "objective": objective, "lora": lora, "weights_gib": weights_gib,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
           "seconds_3_steps": seconds, "tokens_per_item": len(trainer.train_dataset[0]["forget"]["input_ids"])}
    del trainer, model
    torch.cuda.empty_cache()
    return row


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/results/gpu_memory.json")
    p.add_argument("--run", type=int, help="internal: measure RUNS[i] in this process and print it")
    args = p.parse_args()
    if args.run is not None:
        tokenizer = train_tokenizer(["the author was born in a small town and wrote many novels about Question number"],
                                    300)
        print("ROW " + json.dumps(measure(*RUNS[args.run], tokenizer)), flush=True)
        return
    rows = []
    for i in range(len(RUNS)):  # one process per run: nothing of the previous run stays on the GPU
        out = subprocess.run([sys.executable, __file__, "--run", str(i)], capture_output=True, text=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("ROW ")]
        rows.append(json.loads(line[-1][4:]) if line else {"run": RUNS[i], "error": out.stderr[-1500:]})
        print(json.dumps(rows[-1]), flush=True)
    report = {"command": "python benchmarks/gpu_memory.py", "device": torch.cuda.get_device_name(),
              "torch": torch.__version__, "batch": "4 x ~512 tokens, bf16, AdamW (torch), gradient checkpointing",
              "rows": rows}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
