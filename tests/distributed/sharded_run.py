"""A few training steps of UnlearnTrainer (CE-U) and CEUDPOTrainer on a tiny local model: `run` in one process, or
this script under `accelerate launch` on 2 processes (FSDP2 on CPU, see allow_fsdp_on_cpu). The main process writes
the per-step losses and how the model was sharded to OUT/runs.json. Used by test_fsdp_cpu.py."""

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl import CEUDPOConfig, CEUDPOTrainer, UnlearnConfig, UnlearnTrainer

# Every forget answer is the same sentence, so every rank's micro-batch has the same number of answer tokens and
# the mean over ranks of per-rank token means is the one-process token mean.
FORGET = Dataset.from_dict({"question": [f"Question number {i}?" for i in range(8)],
                            "answer": ["Ana Ruiz wrote Blue Sky in Lima."] * 8})
PAIRS = Dataset.from_dict({"prompt": [f"Say something {i}." for i in range(8)],
                           "chosen": [" The sky is blue.", " Bees make honey.", " A dog barks.", " Cats purr.",
                                      " Snow is cold.", " Fire is hot.", " Fish swim.", " Birds fly."],
                           "rejected": [" Green, surely.", " Bees make milk.", " A fish barks.", " Cats bark.",
                                        " Snow is hot.", " Fire is cold.", " Fish fly.", " Birds swim."]})


ACCELERATE_CHOSE = []  # the distributed type accelerate picked before the shim, per Accelerator


def allow_fsdp_on_cpu():
    """accelerate 1.15 turns `--use_fsdp` into FSDP only for GPU-type backends: AcceleratorState keeps MULTI_CPU (DDP
    over gloo) and drops the FSDP plugin, with no error. torch's FSDP2 itself runs on CPU with gloo, so this shim
    (tests only) puts the plugin back after the state is built; everything else is accelerate's own FSDP2 path
    (fsdp2_prepare_model, sharded optimizer, full state dict)."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    original_init = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        ACCELERATE_CHOSE.append(str(self.distributed_type))
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = init


def run(kind: str, per_device: int, steps: int, model_path: str, out: str) -> dict | None:
    """Train `steps` steps of UnlearnTrainer (CE-U) or CEUDPOTrainer (loss_type ceu); the main process returns the
    per-step losses and how the model was distributed (None elsewhere)."""
    common = dict(output_dir=out, use_cpu=True, bf16=False, per_device_train_batch_size=per_device, max_steps=steps,
                  learning_rate=1e-2, save_strategy="no", logging_steps=1, report_to=[], seed=0, data_seed=0,
                  gradient_checkpointing=False, disable_tqdm=True)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tok = AutoTokenizer.from_pretrained(model_path)
    if kind == "unlearn":
        args = UnlearnConfig(objective="ce_u", prompt_format="plain", max_length=64, **common)
        trainer = UnlearnTrainer(model=model, args=args, forget_dataset=FORGET, processing_class=tok)
    else:
        args = CEUDPOConfig(loss_type="ceu", beta=0.5, max_length=64, **common)
        trainer = CEUDPOTrainer(model=model, ref_model=AutoModelForCausalLM.from_pretrained(model_path), args=args,
                                train_dataset=PAIRS, processing_class=tok)
    trainer.train()
    if not trainer.accelerator.is_main_process:
        return None
    params = list(trainer.model.parameters())
    local = sum(p.to_local().numel() if type(p).__name__ == "DTensor" else p.numel() for p in params)
    return {"world_size": trainer.accelerator.num_processes,
            "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
            "fsdp_version": getattr(getattr(trainer.accelerator.state, "fsdp_plugin", None), "fsdp_version", None),
            "fsdp_enabled": trainer.is_fsdp_enabled,
            # FSDP2 keeps each rank's shard as a DTensor: local elements / all elements = 1 / world size
            "local_fraction": local / sum(p.numel() for p in params),
            "linear_ce_u": getattr(trainer, "_linear_ce_u", None),
            "accelerate_chose": ACCELERATE_CHOSE}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--trainers", nargs="+", choices=["unlearn", "dpo"], required=True)
    parser.add_argument("--per_device", type=int, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fsdp_on_cpu", action="store_true", help="apply allow_fsdp_on_cpu (see there)")
    a = parser.parse_args()
    torch.set_num_threads(1)
    if a.fsdp_on_cpu:
        allow_fsdp_on_cpu()
    records = {kind: run(kind, a.per_device, a.steps, a.model, str(Path(a.out) / kind)) for kind in a.trainers}
    if records[a.trainers[0]] is not None:
        Path(a.out, "runs.json").write_text(json.dumps(records))
    # Leave without the interpreter's teardown. In CI rank 0 aborted at exit ("terminate called without an active
    # exception", SIGABRT) after both trainings had finished and runs.json was written: the gloo group's run-loop
    # thread was still joinable when the process group was destroyed. destroy_process_group() first is no cure: in
    # the DDP recipe test it deadlocked (gdb: the main thread, holding the GIL, joins the run-loop thread, which waits
    # for the GIL to free a finished AsyncAllgatherWork's tensor). Nothing is left to do here, so exit now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
