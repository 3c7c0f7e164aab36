"""A model carries its prompt format (issue 30, item 5): the format the library trained it with, and the generation
length its study evaluated it with, are recorded in its config, survive saving and reloading, and are what "auto"
and the CLIs' defaults pick, ahead of the guesses (a chat template is no evidence of chat training)."""

import json

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu.finetune import finetune
from ceu_rl.tofu.formatting import (MAX_NEW_TOKENS_KEY, PROMPT_FORMAT_KEY, record_max_new_tokens, record_prompt_format,
                                    recorded_prompt_format, resolve_max_new_tokens, resolve_prompt_format)
from ceu_rl.unlearn import UnlearnConfig, UnlearnTrainer

QA = Dataset.from_dict({"question": ["Who wrote the red book?", "Where was she born?"],
                        "answer": ["Ann Lee wrote it.", "She was born in Paris."]})


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    texts = ["Question: Answer:", *QA["question"], *QA["answer"]]
    return save_tiny_model(tmp_path_factory.mktemp("fmt-tiny"), texts, vocab_size=300, hidden_size=32, num_layers=1)


def _load(path):
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_auto_reads_the_record_before_the_chat_template(tiny_path, tmp_path):
    model, tok = _load(tiny_path)
    assert tok.chat_template  # the tiny tokenizer, as mini-TOFU's, ships a chat template
    assert resolve_prompt_format("auto", tok, model=model) == "chat"  # no record: the old guess
    record_prompt_format(model, "plain")
    record_max_new_tokens(model, 48)
    assert resolve_prompt_format("auto", tok, model=model) == "plain"
    assert resolve_prompt_format("chat", tok, model=model) == "chat"  # an explicit format always wins
    assert resolve_max_new_tokens(None, model) == 48 and resolve_max_new_tokens(7, model) == 7
    # save, reload, save the reloaded model again: config.json keeps both keys
    model.save_pretrained(tmp_path / "a")
    tok.save_pretrained(tmp_path / "a")
    again, tok_again = _load(tmp_path / "a")
    again.save_pretrained(tmp_path / "b")
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config[PROMPT_FORMAT_KEY] == "plain" and config[MAX_NEW_TOKENS_KEY] == 48
    assert resolve_prompt_format("auto", tok_again, model=again) == "plain"
    assert recorded_prompt_format(tmp_path / "b") == "plain"  # a folder, read without loading the model
    assert resolve_max_new_tokens(None, str(tmp_path / "b")) == 48
    assert recorded_prompt_format(tmp_path / "missing") is None and resolve_max_new_tokens(None, "hub/id") == 200


def test_bad_records_are_refused_or_ignored(tiny_path):
    model, tok = _load(tiny_path)
    with pytest.raises(ValueError, match="resolved format"):
        record_prompt_format(model, "auto")
    with pytest.raises(ValueError, match="positive integer"):
        record_max_new_tokens(model, 0)
    setattr(model.config, PROMPT_FORMAT_KEY, "mistral")
    setattr(model.config, MAX_NEW_TOKENS_KEY, "long")
    with pytest.warns(UserWarning, match="ignored"):
        assert resolve_prompt_format("auto", tok, model=model) == "chat"
    with pytest.warns(UserWarning, match="ignored"):
        assert resolve_max_new_tokens(None, model) == 200


def test_trainers_record_the_format_they_train_with(tiny_path, tmp_path):
    model, tok = _load(tiny_path)
    args = TrainingArguments(output_dir=str(tmp_path / "ft"), use_cpu=True, max_steps=1, per_device_train_batch_size=2,
                             report_to="none", save_strategy="no", disable_tqdm=True)
    trainer = finetune(model, tok, QA, args, prompt_format="plain")
    trainer.save_model(str(tmp_path / "ft_model"))  # what the finetune recipe does
    assert json.loads((tmp_path / "ft_model" / "config.json").read_text())[PROMPT_FORMAT_KEY] == "plain"

    model, tok = _load(tiny_path)
    args = UnlearnConfig(output_dir=str(tmp_path / "un"), use_cpu=True, max_steps=1, objective="ga",
                         prompt_format="raw", per_device_train_batch_size=2, report_to="none", save_strategy="no")
    UnlearnTrainer(model=model, args=args, forget_dataset=QA, processing_class=tok)
    assert getattr(model.config, PROMPT_FORMAT_KEY) == "raw"
