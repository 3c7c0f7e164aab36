"""A terminal a person can read: per-step log dicts go to a JSONL file, the terminal gets one bar or one line per job.

`transformers.Trainer` prints every log dict (`PrinterCallback` when `disable_tqdm=True`, `ProgressCallback.on_log`
otherwise): hundreds of lines per run. `quiet_trainer` swaps both for a JSONL writer and, optionally, a bare bar.
`report_to` integrations (wandb, tensorboard, ...) are separate callbacks and are left alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback


class JsonlLogCallback(TrainerCallback):
    """Appends every log dict (with its step) as one JSON line to `path`, on the main process only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or logs is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if k != "total_flos"}}
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")


def _jsonable(value):
    try:
        return value.item()  # tensors and numpy scalars
    except AttributeError:
        return str(value)


class BarOnlyProgressCallback(ProgressCallback):
    """transformers' progress bar without the per-step dicts it writes under the bar."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return


def quiet_trainer(trainer, log_path: str | Path, progress: bool = False):
    """Route `trainer`'s per-step logs to `log_path` (JSONL) instead of the terminal; `progress=True` keeps one bar.

    Returns the trainer. `trainer.state.log_history` is filled as usual.
    """
    for callback in (PrinterCallback, ProgressCallback, BarOnlyProgressCallback):
        trainer.remove_callback(callback)
    trainer.add_callback(JsonlLogCallback(log_path))
    if progress:
        trainer.add_callback(BarOnlyProgressCallback)
    return trainer


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class JobLines:
    """One line per finished job: `[3/12] npo seed=1 done in 25s | elapsed 1m20s, ETA 4m00s | forget_quality=0.21`.

    The ETA extrapolates the wall time per finished job so far (parallel workers included) to the remaining jobs.
    """

    def __init__(self, total: int, label: str = "", stream=None):
        self.total, self.label = total, label
        self.done_count, self.start = 0, time.time()
        self.stream = stream if stream is not None else sys.stdout

    def done(self, name: str, seconds: float | None = None, **summary) -> str:
        self.done_count += 1
        elapsed = time.time() - self.start
        remaining = self.total - self.done_count
        eta = elapsed / self.done_count * remaining
        parts = [f"[{self.label + ' ' if self.label else ''}{self.done_count}/{self.total}] {name} done"
                 + (f" in {_duration(seconds)}" if seconds is not None else ""),
                 f"elapsed {_duration(elapsed)}" + (f", ETA {_duration(eta)}" if remaining else "")]
        if summary:
            parts.append(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
        line = " | ".join(parts)
        print(line, file=self.stream, flush=True)
        return line
