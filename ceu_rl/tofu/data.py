"""TOFU splits: from the Hugging Face hub (`locuslab/TOFU`) or a local folder of the JSON Lines files.

The default local folder is the copy shipped with ceu-rl (`ceu_rl/tofu/data`, MIT, see its SOURCE.md); point
`source` at another folder (e.g. `../shared/data/tofu`) or at "hub" to read `locuslab/TOFU` with `datasets`.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, load_dataset

DATA_DIR = Path(__file__).parent / "data"
HUB_ID = "locuslab/TOFU"
EVAL_LOGS_DIR = DATA_DIR / "eval_logs"

# split -> fields every record must have
SPLITS: dict[str, tuple[str, ...]] = {
    "full": ("question", "answer"),
    **{f"forget{p}": ("question", "answer") for p in ("01", "05", "10")},
    **{f"retain{p}": ("question", "answer") for p in ("90", "95", "99")},
    **{f"holdout{p}": ("question", "answer") for p in ("01", "05", "10")},
    **{f"forget{p}_perturbed": ("question", "answer", "paraphrased_answer", "perturbed_answer")
       for p in ("01", "05", "10")},
    "retain_perturbed": ("question", "answer", "paraphrased_answer", "perturbed_answer"),
    "real_authors": ("question", "answer"),
    "real_authors_perturbed": ("question", "answer", "perturbed_answer"),
    "world_facts": ("question", "answer"),
    "world_facts_perturbed": ("question", "answer", "perturbed_answer"),
}
# forget split -> (retain split that completes it, open-unlearning retain log for forget quality)
FORGET_TO_RETAIN = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}


def load_split(name: str, source: str | Path | None = None) -> Dataset:
    """Load one TOFU split as a `datasets.Dataset`.

    Args:
        name: one of `SPLITS` (e.g. "forget10", "retain90", "forget10_perturbed", "real_authors_perturbed").
        source: None (the shipped copy), a folder of `<name>.json` files, or "hub" for `locuslab/TOFU`.
    """
    if name not in SPLITS:
        raise ValueError(f"Unknown TOFU split {name!r}; available: {sorted(SPLITS)}.")
    if source == "hub":
        dataset = load_dataset(HUB_ID, name, split="train")
    else:
        folder = Path(source) if source is not None else DATA_DIR
        path = folder / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"TOFU split {name!r} not found: expected {path}. Pass source= a folder holding the TOFU JSON Lines "
                f"files, or source='hub' to load {HUB_ID}."
            )
        dataset = load_dataset("json", data_files=str(path), split="train")
    missing = [f for f in SPLITS[name] if f not in dataset.column_names]
    if missing:
        raise ValueError(f"TOFU split {name!r} lacks field(s) {missing} (has {dataset.column_names}).")
    return dataset


def load_idk(source: str | Path | None = None) -> list[str]:
    """The "I don't know" answers of TOFU (`idontknow.jsonl`: one plain line each), used by IdkDPO."""
    folder = Path(source) if source not in (None, "hub") else DATA_DIR
    path = folder / "idontknow.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"idontknow.jsonl not found in {folder}.")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def retain_eval_log(forget_split: str, model: str = "Llama-2-7b-chat-hf") -> Path:
    """The shipped open-unlearning TOFU_EVAL.json of the retain model that matches `forget_split`."""
    if forget_split not in FORGET_TO_RETAIN:
        raise ValueError(f"forget_split must be one of {sorted(FORGET_TO_RETAIN)}, got {forget_split!r}.")
    path = EVAL_LOGS_DIR / f"tofu_{model}_{FORGET_TO_RETAIN[forget_split]}" / "TOFU_EVAL.json"
    if not path.is_file():
        raise FileNotFoundError(f"No shipped retain log at {path}; download open-unlearning's eval logs for {model}.")
    return path
