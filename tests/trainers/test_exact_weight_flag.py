"""`ceu_exact_gradient`: through CEUGRPOTrainer and CEUDPOTrainer, on a model sharpened until 1 - p ~ 1e-6 on the
tokens CE-U pushes down, the flag's gradient equals a float64 full-logits formula, where the default (w = p / (1 - p)
and grad log p from TRL's float32 fused head) is measurably off; bad heads are refused with the field's name."""

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl import CEUDPOConfig, CEUDPOTrainer, CEUGRPOConfig, CEUGRPOTrainer

SHARPEN = 40.0
PROMPTS = ["Question: What is the capital of France?\nAnswer:", "Question: Name a colour.\nAnswer:"]
GROUP = 4
TEMPERATURE = 0.8


def length_reward(completions, **kwargs):
    return [float(len(c) % 7) for c in completions]


def _sharpened(tiny_model_path, tmp_path_factory, factor):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    with torch.no_grad():
        model.lm_head.weight.mul_(factor)
    path = tmp_path_factory.mktemp(f"sharp-{factor:g}")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def very_sharp_model_path(tiny_model_path, tmp_path_factory):
    """The tiny model with its output layer scaled 40x: sampled tokens (temperature 0.8) reach 1 - p ~ 1e-6
    (float32 resolves 1 - exp(log p) to ~6e-8), where the log-prob form's float32 error dominates."""
    return _sharpened(tiny_model_path, tmp_path_factory, SHARPEN)


@pytest.fixture(scope="module")
def greedy_sharp_model_path(tiny_model_path, tmp_path_factory):
    """Scaled 160x: the greedy continuation (temperature 1, used as DPO's rejected answers) reaches 1 - p < 1e-5."""
    return _sharpened(tiny_model_path, tmp_path_factory, 4 * SHARPEN)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _relative_errors(ours, reference):
    return {n: ((ours[n].double() - reference[n]).norm() / reference[n].norm()).item() for n in reference}


def _naive_ce_u64(logits, targets):
    """CE(q, p) in float64 from full logits, q = softmax(sg(z) with z_y = -inf): written out, no ceu_rl code."""
    masked = logits.detach().scatter(-1, targets.unsqueeze(-1), float("-inf"))
    q = torch.softmax(masked, -1)
    logp = torch.log_softmax(logits, -1)
    return -(torch.where(q > 0, q * logp, torch.zeros_like(logp))).sum(-1)


def _grpo_trainer(path, tmp_path, exact, objective="ceu_full", gradient_checkpointing=False):
    args = CEUGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=8,
                         num_generations=GROUP, max_completion_length=8, max_steps=1, report_to=[],
                         save_strategy="no", gradient_checkpointing=gradient_checkpointing, seed=0,
                         temperature=TEMPERATURE, loss_type="bnpo", beta=0.0, negative_objective=objective,
                         ceu_exact_gradient=exact)
    torch.manual_seed(0)
    return CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=length_reward, args=args,
                          train_dataset=Dataset.from_dict({"prompt": PROMPTS * GROUP}),
                          processing_class=AutoTokenizer.from_pretrained(path))


def _float64_copy(path, model):
    """A float64 copy of `model` (a deepcopy would keep TRL's patched forward, bound to the original)."""
    model64 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    return model64


def _grpo_reference_grads(path, model, inputs, objective):
    """bnpo, on-policy (ratio 1): loss = -sum_t mask A lam_t / sum mask, lam = a tensor of value log pi carrying
    grad CE-U where the objective uses CE-U (A < 0; for ceu_min also p < 1/2), log pi elsewhere, from full float64
    logits at the sampling temperature."""
    model64 = _float64_copy(path, model)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    c_ids = inputs["completion_ids"]
    logits = model64(input_ids=ids, attention_mask=attn).logits[:, -c_ids.size(1) - 1:-1] / TEMPERATURE
    logp = torch.log_softmax(logits, -1).gather(-1, c_ids.unsqueeze(-1)).squeeze(-1)
    ceu = _naive_ce_u64(logits, c_ids)
    a = inputs["advantages"].double().unsqueeze(1).expand_as(logp)
    mask = inputs["completion_mask"].double()
    use_ceu = (a < 0) & ((logp.detach() < -0.6931471805599453) if objective == "ceu_min" else True)
    lam = torch.where(use_ceu, logp.detach() + (ceu - ceu.detach()), logp)
    (-(a * lam * mask).sum() / mask.sum()).backward()
    one_minus_p = -torch.expm1(logp.detach())[(a < 0) & (mask > 0)]
    return {n: p.grad for n, p in model64.named_parameters() if p.grad is not None}, one_minus_p


@pytest.mark.parametrize("objective, gradient_checkpointing", [("ceu_full", False), ("ceu_min", True)])
def test_grpo_exact_gradient_matches_float64_where_default_is_off(very_sharp_model_path, tmp_path, objective,
                                                                  gradient_checkpointing):
    errors = {}
    for exact in (False, True):
        trainer = _grpo_trainer(very_sharp_model_path, tmp_path, exact, objective, gradient_checkpointing)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
        reference, one_minus_p = _grpo_reference_grads(very_sharp_model_path, trainer.model, inputs, objective)
        assert one_minus_p.min() < 1e-5, "the batch must reach the log-prob form's float32 limit"
        errors[exact] = _relative_errors(_grads(trainer.model), reference)
    assert errors[True].keys() == errors[False].keys() and len(errors[True]) > 10
    # relative error of each parameter's gradient (whole tensor) vs float64; measured here, ceu_full: default
    # 0.008-0.017, exact 1.0e-6 - 1.8e-6. ceu_min (with gradient checkpointing) uses CE-U only where p < 1/2, where
    # 1 - p > 1/2 and the default is accurate too: default 1.7e-6 - 2.2e-6, exact 1.2e-6 - 2.3e-6
    assert max(errors[True].values()) < 2e-5, errors[True]
    if objective == "ceu_full":
        assert min(errors[False].values()) > 3e-3, errors[False]


DPO_PROMPTS = ["What is the capital of France?", "Name a colour of the sky.", "What do bees make?"]


def _token_batch(trainer, path, prompts, tokens=6):
    """A collated batch whose rejected answers are the sharpened model's own greedy continuations (token ids, so
    no re-tokenisation): their tokens have p ~ 1 (1 - p down to ~1e-7)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    examples = []
    for prompt, chosen in zip(prompts, [" Paris.", " Blue.", " Honey."]):
        ids = tokenizer(prompt).input_ids
        with torch.no_grad():
            gen = trainer.ref_model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False,
                                             pad_token_id=tokenizer.pad_token_id)
        examples.append({"prompt_ids": ids, "chosen_ids": tokenizer(chosen).input_ids,
                         "rejected_ids": gen[0, len(ids):].tolist()})
    return trainer._prepare_inputs(trainer.data_collator(examples))


def _dpo_trainer(path, tmp_path, exact, gamma):
    dataset = Dataset.from_dict({"prompt": DPO_PROMPTS, "chosen": ["a"] * 3, "rejected": ["b"] * 3})
    args = CEUDPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=3,
                        max_steps=1, report_to=[], gradient_checkpointing=False, save_strategy="no", beta=0.5,
                        max_length=64, loss_type="ceu", ceu_weight=gamma, ceu_exact_gradient=exact)
    torch.manual_seed(0)
    return CEUDPOTrainer(model=AutoModelForCausalLM.from_pretrained(path),
                         ref_model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(path))


def _dpo_reference_grads(path, model, ref_model, batch, beta, gamma):
    """CE-U-DPO in float64 from full logits: -log sigma(beta (D_w - D_l)), D = sum_t (log pi - log pi_ref), the
    rejected tokens' log pi keeping its value and carrying gamma grad CE-U."""
    model64, ref64 = _float64_copy(path, model), _float64_copy(path, ref_model)
    ids, mask = batch["input_ids"], batch["completion_mask"][:, 1:].double()
    targets = ids[:, 1:]
    logits = model64(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1]
    logp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        ref_logits = ref64(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1]
        ref_logp = torch.log_softmax(ref_logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    n = ids.size(0) // 2
    ceu = _naive_ce_u64(logits[n:], targets[n:])
    pushed = torch.cat([logp[:n], logp[n:].detach() + gamma * (ceu - ceu.detach())])
    d = ((pushed - ref_logp) * mask).sum(1)
    (-F.logsigmoid(beta * (d[:n] - d[n:]))).mean().backward()
    one_minus_p = -torch.expm1(logp.detach()[n:][mask[n:] > 0])
    return {n_: p.grad for n_, p in model64.named_parameters() if p.grad is not None}, one_minus_p


def test_dpo_exact_gradient_matches_float64_where_default_is_off(greedy_sharp_model_path, tmp_path):
    gamma = 0.7
    errors = {}
    for exact in (False, True):
        trainer = _dpo_trainer(greedy_sharp_model_path, tmp_path, exact, gamma)
        trainer.model.train()
        batch = _token_batch(trainer, greedy_sharp_model_path, DPO_PROMPTS)
        trainer.compute_loss(trainer.model, batch).backward()
        reference, one_minus_p = _dpo_reference_grads(greedy_sharp_model_path, trainer.model, trainer.ref_model,
                                                      batch, 0.5, gamma)
        assert one_minus_p.min() < 1e-5, "the rejected tokens must reach the log-prob form's float32 limit"
        errors[exact] = _relative_errors(_grads(trainer.model), reference)
    assert errors[True].keys() == errors[False].keys() and len(errors[True]) > 10
    # measured here (1 - p of rejected tokens from 3.5e-8 to 0.42): default 0.27-0.40, exact 0.7e-6 - 1.7e-6
    assert min(errors[False].values()) > 3e-2, errors[False]
    assert max(errors[True].values()) < 2e-5, errors[True]


@pytest.mark.parametrize("config_cls, kw", [(CEUDPOConfig, dict(loss_type="ceu")),
                                            (CEUGRPOConfig, dict(negative_objective="ceu_full"))])
def test_liger_kernel_is_refused(tmp_path, config_cls, kw):
    with pytest.raises(ValueError, match="ceu_exact_gradient=True does not support use_liger_kernel"):
        config_cls(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], use_liger_kernel=True,
                   ceu_exact_gradient=True, **kw)


def test_peft_adapter_on_head_is_refused(tiny_model_path, tmp_path):
    from peft import LoraConfig, get_peft_model

    from ceu_rl.trainers.exact_ce_u_head import check_exact_head

    args = CEUDPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], loss_type="ceu",
                        ceu_exact_gradient=True, max_length=64)
    dataset = Dataset.from_dict({"prompt": DPO_PROMPTS, "chosen": [" a"] * 3, "rejected": [" b"] * 3})
    lora_on_head = LoraConfig(r=2, target_modules=["q_proj", "lm_head"])
    with pytest.raises(ValueError, match="lm_head"):  # TRL 1.16 refuses it first, for every loss type
        CEUDPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_path), args=args, train_dataset=dataset,
                      processing_class=AutoTokenizer.from_pretrained(tiny_model_path), peft_config=lora_on_head)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path), lora_on_head)
    with pytest.raises(ValueError, match=r"ceu_exact_gradient=True needs the LM head to be a plain torch\.nn\.Linear"):
        check_exact_head(peft_model, args)  # our own guard, should TRL stop refusing it
    check_exact_head(get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path),
                                    LoraConfig(r=2, target_modules=["q_proj"])), args)  # adapters elsewhere: fine


def test_scaled_logits_are_refused_and_pg_ignores_the_flag(tiny_model_path, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    model.config.logit_scale = 2.0  # TRL's fused head would scale the logits; the exact path does not
    args = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=4,
                num_generations=GROUP, max_completion_length=4, ceu_exact_gradient=True)
    common = dict(reward_funcs=length_reward, train_dataset=Dataset.from_dict({"prompt": PROMPTS * 2}),
                  processing_class=AutoTokenizer.from_pretrained(tiny_model_path))
    with pytest.raises(ValueError, match=r"ceu_exact_gradient=True does not support .*config\.logit_scale=2\.0"):
        CEUGRPOTrainer(model=model, args=CEUGRPOConfig(negative_objective="ceu_min", **args), **common)
    CEUGRPOTrainer(model=model, args=CEUGRPOConfig(negative_objective="pg", **args), **common)  # TRL's GRPO
