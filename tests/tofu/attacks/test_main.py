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
