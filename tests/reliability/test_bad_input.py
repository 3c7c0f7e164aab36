"""Bad input at every entry point: one test per row of the README's "Bad input" table. Each asserts what a user
actually gets (through TRL's own checks where those already answer): a clear error naming the field and the fix, or
the documented behaviour."""

import json
import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl import CEUDPOConfig, CEUDPOTrainer, CEUGRPOConfig, CEUGRPOTrainer, UnlearnConfig, UnlearnTrainer
from ceu_rl.objectives import ce_u_loss, ce_u_loss_from_logprobs
from ceu_rl.tofu import metrics

from .conftest import FORGET, PREFERENCES, RETAIN

PROMPTS = list(PREFERENCES["prompt"])


def _tok(path, chat_template=True):
    tok = AutoTokenizer.from_pretrained(path)
    if not chat_template:
        tok.chat_template = None
    return tok


def _unlearn(path, tmp_path, forget=FORGET, retain=RETAIN, objective="ce_u_retain", tokenizer=None, **kw):
    args = UnlearnConfig(output_dir=str(tmp_path), objective=objective, use_cpu=True, per_device_train_batch_size=2,
                         max_steps=1, report_to=[], save_strategy="no", max_length=64,
                         **{"prompt_format": "plain", **kw})
    return UnlearnTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, forget_dataset=forget,
                          retain_dataset=retain, processing_class=tokenizer or _tok(path))


def _dpo(path, tmp_path, dataset, chat_template=True, **kw):
    args = CEUDPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=2, max_steps=1,
                        report_to=[], save_strategy="no", gradient_checkpointing=False, max_length=64, **kw)
    return CEUDPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=dataset,
                         processing_class=_tok(path, chat_template))


def _length_reward(completions, **kwargs):
    return [float(len(c) % 7) for c in completions]


def _grpo(path, tmp_path, dataset=None, reward=_length_reward, chat_template=True, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4,
                max_completion_length=6, max_steps=1, report_to=[], save_strategy="no", logging_steps=1,
                gradient_checkpointing=False, seed=0, beta=0.0)
    base.update(kw)
    dataset = Dataset.from_dict({"prompt": PROMPTS}) if dataset is None else dataset
    return CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=reward,
                          args=CEUGRPOConfig(**base), train_dataset=dataset,
                          processing_class=_tok(path, chat_template))


def _train_log(trainer):
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h][-1]


# ---- a dataset missing a required column --------------------------------------------------------------------------
def test_missing_column(tiny_path, tmp_path):
    with pytest.raises(ValueError, match=r"forget dataset has no 'answer' column.*rename"):
        _unlearn(tiny_path, tmp_path, forget=FORGET.remove_columns("answer"))
    with pytest.raises(ValueError, match=r"no \['rejected'\] column"):
        _dpo(tiny_path, tmp_path, PREFERENCES.remove_columns("rejected"))
    with pytest.raises(ValueError, match=r"no 'prompt' column.*rename_column"):
        _grpo(tiny_path, tmp_path, Dataset.from_dict({"question": PROMPTS}))


# ---- empty strings ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("column", ["question", "answer"])
def test_empty_question_or_answer(tiny_path, tmp_path, column):
    rows = FORGET.to_dict()
    rows[column][1] = "  "
    with pytest.raises(ValueError, match=rf"(empty '{column}' at row 1|Empty answer)"):
        _unlearn(tiny_path, tmp_path, forget=Dataset.from_dict(rows))


@pytest.mark.parametrize("column", ["prompt", "chosen", "rejected"])
def test_empty_preference_strings(tiny_path, tmp_path, column):
    rows = PREFERENCES.to_dict()
    rows[column][2] = ""
    with pytest.raises(ValueError, match=rf"empty '{column}'.* row 2"):
        _dpo(tiny_path, tmp_path, Dataset.from_dict(rows))


def test_empty_grpo_prompt(tiny_path, tmp_path):
    with pytest.raises(ValueError, match=r"empty 'prompt' at row 3"):
        _grpo(tiny_path, tmp_path, Dataset.from_dict({"prompt": PROMPTS[:3] + [" "]}))


# ---- an empty dataset ---------------------------------------------------------------------------------------------
def test_empty_dataset(tiny_path, tmp_path):
    with pytest.raises(ValueError, match="forget dataset is empty"):
        _unlearn(tiny_path, tmp_path, forget=FORGET.select([]))
    with pytest.raises(ValueError, match="retain dataset is empty"):
        _unlearn(tiny_path, tmp_path, retain=RETAIN.select([]))
    with pytest.raises(ValueError, match="train dataset is empty"):
        _dpo(tiny_path, tmp_path, PREFERENCES.select([]))
    with pytest.raises(ValueError, match="train dataset is empty"):
        _grpo(tiny_path, tmp_path, Dataset.from_dict({"prompt": []}))


# ---- conversational data, tokenizer without a chat template -------------------------------------------------------
def test_conversational_data_without_chat_template(tiny_path, tmp_path):
    conv = lambda role, texts: [[{"role": role, "content": t}] for t in texts]  # noqa: E731
    preferences = Dataset.from_dict({"prompt": conv("user", PREFERENCES["prompt"]),
                                     "chosen": conv("assistant", PREFERENCES["chosen"]),
                                     "rejected": conv("assistant", PREFERENCES["rejected"])})
    with pytest.raises(ValueError, match="conversational.*no chat template"):
        _dpo(tiny_path, tmp_path, preferences, chat_template=False)
    with pytest.raises(ValueError, match="conversational.*no chat template"):
        _grpo(tiny_path, tmp_path, Dataset.from_dict({"prompt": conv("user", PROMPTS)}), chat_template=False)
    # UnlearnTrainer takes plain question/answer text: message lists, or prompt_format='chat' without a template
    with pytest.raises(ValueError, match=r"'question' at row 0 is a list, not a string"):
        _unlearn(tiny_path, tmp_path, forget=Dataset.from_dict({"question": conv("user", FORGET["question"]),
                                                                 "answer": FORGET["answer"]}))
    with pytest.raises(ValueError, match="prompt_format='chat' needs a tokenizer with a chat template"):
        _unlearn(tiny_path, tmp_path, tokenizer=_tok(tiny_path, chat_template=False), prompt_format="chat")


# ---- rewards: NaN, None, wrong length, raising, all equal ---------------------------------------------------------
def test_reward_nan_is_an_error_naming_the_function(tiny_path, tmp_path):
    def flaky(completions, **kwargs):
        return [float("nan")] + [1.0] * (len(completions) - 1)

    with pytest.raises(ValueError, match=r"reward function 'flaky' returned nan for completion 0.*None"):
        _grpo(tiny_path, tmp_path, reward=flaky).train()


def test_reward_none_everywhere_gives_no_update(tiny_path, tmp_path):
    """TRL's semantics: None = "this function does not apply"; a completion no function scores gets no advantage
    (TRL logs a warning), so the step changes nothing; the logged reward is None, not a made-up number."""
    trainer = _grpo(tiny_path, tmp_path, reward=lambda completions, **kw: [None] * len(completions))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    log = _train_log(trainer)
    assert log["reward"] is None and log["grad_norm"] == 0.0
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def test_reward_of_the_wrong_length(tiny_path, tmp_path):
    with pytest.raises(ValueError, match=r"returned 1 rewards, but 4 were expected"):
        _grpo(tiny_path, tmp_path, reward=lambda completions, **kw: [1.0]).train()


def test_reward_function_that_raises(tiny_path, tmp_path):
    def broken(completions, **kwargs):
        return [1 / 0 for _ in completions]

    with pytest.raises(ZeroDivisionError) as info:
        _grpo(tiny_path, tmp_path, reward=broken).train()
    assert any("reward function 'broken'" in note for note in info.value.__notes__)


def test_all_equal_rewards_give_zero_gradient(tiny_path, tmp_path):
    """Every advantage is 0 (GRPO normalises within the group): no policy gradient, with beta=0 no gradient at all."""
    log = _train_log(_grpo(tiny_path, tmp_path, reward=lambda completions, **kw: [1.0] * len(completions)))
    assert log["reward_std"] == 0.0 and log["frac_reward_zero_std"] == 1.0
    assert log["grad_norm"] == 0.0 and log["loss"] == 0.0


def test_max_completion_length_one(tiny_path, tmp_path):
    """Allowed: one-token completions train normally (every one clipped at the limit)."""
    trainer = _grpo(tiny_path, tmp_path, max_completion_length=1)
    log = _train_log(trainer)
    assert log["completions/max_length"] == 1.0 and log["completions/clipped_ratio"] == 1.0
    assert math.isfinite(log["loss"]) and math.isfinite(log["grad_norm"])


# ---- the log-prob form of CE-U, double backward -------------------------------------------------------------------
def _logprobs_and_entropy():
    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))
    logp_all = torch.log_softmax(logits, -1)
    return logp_all.gather(-1, labels.unsqueeze(-1)).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


@pytest.mark.parametrize("bad", ["nan_logprob", "positive_logprob", "nan_entropy"])
def test_logprob_form_rejects_nan_and_positive_values(bad):
    logp, entropy = _logprobs_and_entropy()
    if bad == "nan_logprob":
        logp[1, 3] = float("nan")
    elif bad == "positive_logprob":
        logp[1, 3] = 0.7
    else:
        entropy[1, 3] = float("nan")
    message = {"nan_logprob": r"logprobs is NaN at valid position \(1, 3\)",
               "positive_logprob": r"logprobs must be <= 0.*0\.7 at valid position \(1, 3\)",
               "nan_entropy": r"entropy is nan at valid position \(1, 3\)"}[bad]
    with pytest.raises(ValueError, match=message):
        ce_u_loss_from_logprobs(logp, entropy)
    mask = torch.ones_like(logp, dtype=torch.bool)
    mask[1, 3] = False  # masked-out positions (padding) may hold anything
    assert torch.isfinite(ce_u_loss_from_logprobs(logp, entropy, mask))


def test_double_backward_through_ce_u_loss_is_refused():
    logits = torch.randn(4, 7, requires_grad=True)
    labels = torch.tensor([0, 3, 6, 2])
    (grad,) = torch.autograd.grad(ce_u_loss(logits, labels), logits)  # first order: fine
    assert torch.isfinite(grad).all()
    with pytest.raises(RuntimeError, match="do not support double backward"):
        torch.autograd.grad(ce_u_loss(logits, labels), logits, create_graph=True)


# ---- TOFU eval logs fed to the scorer -----------------------------------------------------------------------------
def _eval_log(n_forget=3, n_other=2):
    def metric(field, n, value=0.5):
        return {"agg_value": value, "value_by_index": {str(i): {field: value} for i in range(n)}}

    log = {"forget_truth_ratio": metric("score", n_forget), "forget_Q_A_Prob": metric("prob", n_forget),
           "forget_Q_A_ROUGE": metric("rougeL_recall", n_forget), "retain_Q_A_Prob": metric("prob", n_other)}
    for prefix in ("retain", "ra", "wf"):
        log[f"{prefix}_Truth_Ratio"] = metric("score", n_other)
        log[f"{prefix}_Q_A_ROUGE"] = metric("rougeL_recall", n_other)
    for prefix in ("ra", "wf"):
        log[f"{prefix}_Q_A_Prob_normalised"] = metric("prob", n_other)
    return log


def test_scorer_bad_eval_logs(tmp_path):
    from ceu_rl.tofu import score

    assert metrics.summary_from_eval_log(_eval_log(), _eval_log())["forget_quality"] == 1.0  # the valid baseline
    log = _eval_log()
    del log["ra_Q_A_ROUGE"]
    with pytest.raises(ValueError, match="no per-question values for 'ra_Q_A_ROUGE'"):
        metrics.summary_from_eval_log(log)
    log = _eval_log()
    log["retain_Q_A_Prob"]["value_by_index"]["1"]["prob"] = float("nan")
    with pytest.raises(ValueError, match="'retain_Q_A_Prob' question 1 has prob=nan"):
        metrics.summary_from_eval_log(log)
    log = _eval_log()
    del log["forget_Q_A_ROUGE"]["value_by_index"]["2"]
    with pytest.raises(ValueError, match="forget metrics of the eval log have different numbers of questions"):
        metrics.summary_from_eval_log(log)
    with pytest.raises(ValueError, match="retain log have different numbers of questions.*same forget split"):
        metrics.summary_from_eval_log(_eval_log(n_forget=3), _eval_log(n_forget=4))
    # the command line: one "error:" line, no traceback
    bad = tmp_path / "TOFU_EVAL.json"
    log = _eval_log()
    log["wf_Truth_Ratio"]["value_by_index"]["0"]["score"] = None
    bad.write_text(json.dumps(log))
    with pytest.raises(SystemExit, match="error: .*'wf_Truth_Ratio' question 0 has score=None"):
        score.main([str(bad)])


def test_evaluate_cli_with_a_missing_retain_log(tmp_path):
    from ceu_rl.tofu import evaluate

    with pytest.raises(SystemExit, match=r"error: .*nope.json does not exist \(expected a TOFU_EVAL.json\)"):
        evaluate.main(["--model", "unused", "--out", str(tmp_path), "--retain_log", str(tmp_path / "nope.json")])


def test_reward_wrapping_keeps_names_and_leaves_other_callables_to_trl():
    import functools

    from ceu_rl.trainers.input_checks import checked_reward_funcs

    class Scorer:
        def __call__(self, completions, **kwargs):
            return [float("nan")] * len(completions)

    async def async_reward(completions, **kwargs):
        return [1.0] * len(completions)

    partial = functools.partial(_length_reward)
    scorer = Scorer()
    wrapped = checked_reward_funcs([_length_reward, scorer, partial, async_reward, "some/reward-model"])
    assert wrapped[0] is not _length_reward and wrapped[0].__name__ == "_length_reward"
    assert wrapped[0](completions=["ab", "abc"]) == [2.0, 3.0]
    assert wrapped[1:] == [scorer, partial, async_reward, "some/reward-model"]  # TRL's, unchanged
