"""Run inside a fresh venv holding only the built wheel (dependencies reached through a .pth, see test_wheel.py):
import ceu_rl from the wheel, find the shipped TOFU data, train two CE-U-DPO steps on a tiny local model.

    python -I wheel_smoke.py VENV OUT        prints one JSON line
"""

import json
import sys
from importlib import metadata, resources
from pathlib import Path

venv, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])

import ceu_rl  # noqa: E402

from_wheel = Path(ceu_rl.__file__).resolve().is_relative_to(venv)
data = Path(str(resources.files("ceu_rl.tofu") / "data")).resolve()

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from ceu_rl import CEUDPOConfig, CEUDPOTrainer  # noqa: E402
from ceu_rl.tiny_models import save_tiny_model  # noqa: E402
from ceu_rl.tofu import load_split, retain_eval_log  # noqa: E402

forget = load_split("forget01")  # the shipped copy (no source given)
rows = forget.select(range(6))
path = save_tiny_model(out / "tiny", (list(rows["question"]) + list(rows["answer"])) * 2, vocab_size=320)
dataset = Dataset.from_dict({"prompt": rows["question"], "chosen": [" " + a for a in rows["answer"]],
                             "rejected": [" I have no idea who that is."] * len(rows)})
args = CEUDPOConfig(output_dir=str(out / "run"), loss_type="ceu", beta=0.1, max_steps=2, per_device_train_batch_size=3,
                    learning_rate=1e-3, max_length=64, use_cpu=True, bf16=False, gradient_checkpointing=False,
                    report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True)
trainer = CEUDPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=dataset,
                        processing_class=AutoTokenizer.from_pretrained(path))
trainer.train()
logs = [h for h in trainer.state.log_history if "loss" in h]
print(json.dumps({
    "ceu_rl_file": ceu_rl.__file__, "from_wheel": from_wheel, "version": ceu_rl.__version__,
    "dist_version": metadata.version("ceu-rl"), "data_dir": str(data), "data_in_venv": data.is_relative_to(venv),
    "forget01_rows": len(forget), "retain90_log": retain_eval_log("forget10").is_file(),
    "global_step": trainer.state.global_step, "losses": [h["loss"] for h in logs],
    "ceu_terms": [h.get("loss/ceu_term") for h in logs],
}))
