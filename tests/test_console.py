"""ceu_rl.console: per-step dicts go to the JSONL file, not to the terminal; one line per finished job."""

import io
import json

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from ceu_rl.console import BarOnlyProgressCallback, JobLines, JsonlLogCallback, quiet_trainer


def _trainer(tmp_path, disable_tqdm):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    ids = torch.randint(0, 32, (8, 6))
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True, max_steps=3, logging_steps=1,
                             per_device_train_batch_size=4, report_to="none", save_strategy="no",
                             disable_tqdm=disable_tqdm)
    return Trainer(model=model, args=args, train_dataset=data)


def test_quiet_trainer_logs_to_file_not_terminal(tmp_path, capsys):
    for disable_tqdm in (True, False):  # PrinterCallback and ProgressCallback both print the dicts
        trainer = quiet_trainer(_trainer(tmp_path, disable_tqdm), tmp_path / f"log{disable_tqdm}.jsonl")
        trainer.train()
        out = capsys.readouterr()
        assert "'loss'" not in out.out + out.err and "grad_norm" not in out.out + out.err
        rows = [json.loads(line) for line in (tmp_path / f"log{disable_tqdm}.jsonl").read_text().splitlines()]
        history = trainer.state.log_history
        assert len(rows) == len(history) == 4  # 3 steps + the train summary
        assert [r["loss"] for r in rows[:3]] == [h["loss"] for h in history[:3]]
        assert rows[2]["step"] == 3
        names = [type(c).__name__ for c in trainer.callback_handler.callbacks]
        assert "PrinterCallback" not in names and "ProgressCallback" not in names


def test_quiet_trainer_progress_bar_without_dicts(tmp_path, capsys):
    trainer = quiet_trainer(_trainer(tmp_path, True), tmp_path / "log.jsonl", progress=True)
    assert any(isinstance(c, BarOnlyProgressCallback) for c in trainer.callback_handler.callbacks)
    assert sum(isinstance(c, JsonlLogCallback) for c in trainer.callback_handler.callbacks) == 1
    trainer.train()
    err = capsys.readouterr().err
    assert "3/3" in err and "'loss'" not in err


def test_job_lines_counts_and_eta():
    stream = io.StringIO()
    lines = JobLines(total=3, label="mini-tofu", stream=stream)
    first = lines.done("ga seed=0", seconds=65.0, forget_quality=0.123456)
    assert first.startswith("[mini-tofu 1/3] ga seed=0 done in 1m05s") and "ETA" in first
    assert "forget_quality=0.123" in first
    lines.done("npo seed=0")
    last = lines.done("kl seed=0", seconds=3.0)
    assert last.startswith("[mini-tofu 3/3] kl seed=0 done in 3s") and "ETA" not in last
    assert stream.getvalue().count("\n") == 3
