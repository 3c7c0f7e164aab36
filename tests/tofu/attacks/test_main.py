"""`python -m ceu_rl.tofu.attacks` on a tiny local model: each attack writes its JSON with the fields documented in
docs/attacks.md, and the numbers that can be known in advance are (lr=0 changes nothing, so R = 1)."""

import json

import pytest

from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu import load_split
from ceu_rl.tofu.attacks.__main__ import main


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    d = load_split("forget01_perturbed")
    texts = list(d["question"]) + list(d["answer"]) + list(d["paraphrased_question"])
    return str(save_tiny_model(tmp_path_factory.mktemp("cli-tiny"), texts, vocab_size=400, hidden_size=64))


COMMON = ["--forget_split", "forget01", "--prompt_format", "plain", "--max_new_tokens", "4"]


def test_leak_cli(tiny_path, tmp_path):
    main(["leak", "--model", tiny_path, "--retain_model", tiny_path, "--questions", "2", "--n", "3",
          "--out", str(tmp_path), *COMMON])
    out = json.loads((tmp_path / "LEAK.json").read_text())
    for role in ("model", "retain_model"):
        for key in ("question", "paraphrased_question"):
            report = out[role][key]
            assert report["ks"] == [1, 2] and report["n"] == 3 and report["questions"] == 2
            assert set(report["leak_at_k"]) == {"0.3", "0.5", "0.7"}
            assert all(0 <= q["counts"]["0.3"] <= 3 for q in report["per_question"])
    assert out["model"]["settings"]["max_new_tokens"] == 4
    assert out["model"]["question"] == out["retain_model"]["question"]  # same weights, same seed: same samples


@pytest.mark.slow
def test_relearn_cli_lr0_changes_nothing(tiny_path, tmp_path):
    main(["relearn", "--model", tiny_path, "--retain_model", tiny_path, "--questions", "4", "--heldout",
          "--lr", "0", "--train_batch_size", "2", "--grad_accum", "1", "--out", str(tmp_path), *COMMON])
    out = json.loads((tmp_path / "RELEARN.json").read_text())
    assert sorted(out["train_index"] + out["eval_index"]) == [0, 1, 2, 3] and len(out["train_index"]) == 2
    (run,) = out["runs"]
    assert run["unlearned"]["after"] == run["unlearned"]["before"]
    assert set(run["R"]) == {"forget_Q_A_Prob", "forget_Q_A_PARA_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio"}
    assert all(r == 1.0 for r in run["R"].values())


def test_quantize_cli_stand_in(tiny_path, tmp_path):
    main(["quantize", "--model", tiny_path, "--questions", "2", "--method", "fake", "--out", str(tmp_path), *COMMON])
    out = json.loads((tmp_path / "QUANTIZE.json").read_text())
    assert [r["bits"] for r in out["runs"]] == [4, 8]
    assert all(r["quantization"]["method"] == "fake" for r in out["runs"])
    assert set(out["runs"][0]["Q"]) == {"forget_Q_A_Prob", "forget_Q_A_PARA_Prob", "forget_Q_A_ROUGE"}
    assert out["runs"][1]["after"]["forget_Q_A_Prob"] == pytest.approx(out["before"]["forget_Q_A_Prob"], rel=0.05)


def test_leak_cli_defaults_take_the_recorded_format_and_length(tiny_path, tmp_path):
    # a mini-TOFU-like model: trained on the plain format, saved with the tiny tokenizer's chat template, its study's
    # generation length recorded. With no --prompt_format / --max_new_tokens the CLI measures it as trained (issue 30:
    # "auto" used to pick the chat template)
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from ceu_rl.tofu.finetune import finetune
    from ceu_rl.tofu.formatting import record_max_new_tokens

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_path), AutoTokenizer.from_pretrained(tiny_path)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True, max_steps=2, learning_rate=1e-2,
                             per_device_train_batch_size=4, report_to="none", save_strategy="no", disable_tqdm=True)
    finetune(model, tok, load_split("forget01").select(range(8)), args, prompt_format="plain")
    record_max_new_tokens(model, 5)
    path = tmp_path / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    assert (path / "chat_template.jinja").is_file() or "chat_template" in (path / "tokenizer_config.json").read_text()
    runs = {"defaults": [], "plain": ["--prompt_format", "plain", "--max_new_tokens", "5"],
            "chat": ["--prompt_format", "chat", "--max_new_tokens", "5"]}
    got = {}
    for name, extra in runs.items():
        main(["leak", "--model", str(path), "--forget_split", "forget01", "--questions", "3", "--n", "4",
              "--no_paraphrased", "--save_samples", "--out", str(tmp_path / name), *extra])
        got[name] = json.loads((tmp_path / name / "LEAK.json").read_text())["model"]
    assert got["defaults"]["settings"]["prompt_format"] == "plain"
    assert got["defaults"]["settings"]["max_new_tokens"] == 5
    assert got["defaults"]["question"] == got["plain"]["question"]  # every sample, count and curve
    assert got["defaults"]["question"] != got["chat"]["question"]
