"""Relearning-resistant unlearning: sharpness-aware (SAM), adversarial-relearning and weight-averaged unlearning.

Fan et al., "Towards LLM Unlearning Resilient to Relearning Attacks: A Sharpness-Aware Minimization Perspective and
Beyond" (ICML 2025, arXiv 2502.05374; code OPTML-Group/Unlearn-Smooth) write robust unlearning as

    min_w  max_{||delta||_2 <= rho}  F(w + delta)  +  R(w)

(F the forget loss as the trainer minimises it, R the retain/utility loss): the relearning adversary moves the
weights to undo the forgetting, so the forget loss should stay low in a whole ball around w. One first-order step of
the inner max is SAM's ascent direction, delta = rho * g / ||g||_2 with g = grad F(w), so each step uses

    grad F(w + delta) + grad R(w).

What their code perturbs (WMDP/src/unlearn/base.py `SAMTrainer`, MUSE/baselines/baselines/sam_iterative.py), and what
this module follows:
- every trainable parameter (`requires_grad`), one global L2 norm over all of them; delta is added in place and
  taken away after the perturbed backward;
- g is the gradient of the *forget* loss as minimised (GA's -NLL, NPO's loss, ...): delta increases the forget loss,
  the direction a relearning step moves it (for GA, delta is one normalised relearning step);
- only the forget term is evaluated at w + delta; the retain term's gradient is taken at the unperturbed w;
- rho: 0.01 (MUSE scripts and WMDP's run_wmdp_unlearn.sh for NPO+SAM, Zephyr-7B / Llama-2-7B, lr 5e-6 to 1e-5) and
  0.1 (WMDP's GradDiff+SAM.json / NPO+SAM.json).
Where this differs: their code restores w by subtracting delta (not bit-exact in floating point) and zeroes the
accumulated gradients each micro-batch (gradient accumulation is lost); here w is restored from a copy and the
gradients accumulate over micro-batches as in the plain trainer. A zero forget gradient gives no perturbation (theirs:
0/0). Their randomized smoothing (RSTrainer: Gaussian noise of std rho on the weights, 3 samples, rho 1e-4), gradient
penalty (NPO_FT_GNR), curvature regularisation (NPO_FT_CR) are not implemented; weight averaging is
(`WeightAveragingCallback`, their `WeightAveragingCallback` in WMDP/src/model/unlearn.py).

The adversarial variant replaces SAM's one normalised ascent step with `k` plain SGD steps of relearning on the forget
batch (gradient descent on the NLL of the forget answers, step `lr`): delta = w_k - w, and the update uses
grad F(w_k) + grad R(w), a first-order version of tamper-resistant training's inner loop (Tamirisa et al., TAR,
arXiv 2408.00761, whose adversary fine-tunes for many steps with AdamW on held-out forget-domain data and whose outer
gradient is first-order too). Here the adversary sees the step's own forget batch and has no optimizer state.

The mechanics (`SharpnessAwareMixin.training_step`): per micro-batch
(a) the forget and retain parts at w, in `no_sync` (DDP reduces nothing here); g = autograd.grad(forget part), which
    leaves `.grad` alone; the retain part's gradient is accumulated into `.grad` at w;
(b) w is copied and perturbed in place (SAM's delta, or the k relearning steps);
(c) the forget part at w + delta is returned to transformers' `training_step`, which scales it for gradient
    accumulation and back-propagates it as usual (DDP reduces everything accumulated, once, on the sync step);
(d) w is restored from the copy; the optimizer steps at the end of the accumulation window, as usual.
The backward of (c) runs while the weights are perturbed, so gradient checkpointing (which recomputes the forward in
the backward) sees w + delta as it should. Not supported: DeepSpeed and FSDP (sharded parameters: the in-place
perturbation and the local gradient are not defined there) -> ValueError. Under DDP each process perturbs along its
own forget gradient (SAM's per-device "m-sharpness", Foret et al. 2021, as the authors' code under accelerate).
Cost: the forget forward/backward runs twice (SAM) or k + 1 times (adversarial), the retain one once; the trainer's
`compute_loss` also re-runs the retain forward at w + delta, whose result is discarded (measured in
docs/unlearning_robustness.md).
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from transformers import TrainerCallback


def check_sam_rho(value: float, name: str = "sam_rho") -> float:
    """`value` as a float, or ValueError naming `name` when it is negative or not finite."""
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={value} is out of range: use a finite radius >= 0 (0 = off; Fan et al. 2025 use "
                         "0.01 and 0.1 on 7B models).")
    return value


def check_perturbation_options(sam_rho: float = 0.0, adv_relearn_steps: int = 0,
                               adv_relearn_lr: float = 0.0) -> tuple[float, int, float]:
    """(sam_rho, adv_relearn_steps, adv_relearn_lr) checked; ValueError naming the field that is out of range."""
    rho = check_sam_rho(sam_rho)
    if isinstance(adv_relearn_steps, bool) or int(adv_relearn_steps) != adv_relearn_steps or adv_relearn_steps < 0:
        raise ValueError(f"adv_relearn_steps={adv_relearn_steps} is out of range: use an integer >= 0 (0 = off).")
    lr = float(adv_relearn_lr)
    if adv_relearn_steps and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"adv_relearn_lr={adv_relearn_lr} is out of range: adv_relearn_steps > 0 needs the "
                         "adversary's SGD step size > 0.")
    if rho > 0 and adv_relearn_steps:
        raise ValueError("sam_rho > 0 and adv_relearn_steps > 0 are two ways to perturb the weights before the "
                         "forget gradient; use one (set the other to 0).")
    return rho, int(adv_relearn_steps), lr


def global_grad_norm(grads) -> torch.Tensor:
    """The L2 norm of all tensors in `grads` together (None entries skipped), in at least float32."""
    norms = [g.detach().to(torch.promote_types(g.dtype, torch.float32)).norm(2) for g in grads if g is not None]
    if not norms:
        return torch.zeros(())
    return torch.stack([n.to(norms[0].device) for n in norms]).norm(2)


def sam_perturbation(grads, rho: float) -> list[torch.Tensor | None]:
    """SAM's perturbation delta = rho * g / ||g||_2 (one global norm over every tensor; None stays None).

    A zero gradient gives zeros (no direction to ascend). Each delta has its gradient's dtype and device."""
    norm = global_grad_norm(grads)
    if not bool(norm > 0):
        return [None if g is None else torch.zeros_like(g) for g in grads]
    return [None if g is None else g.detach() * (rho / norm.to(g.device)).to(g.dtype) for g in grads]


@torch.no_grad()
def perturb_(params, deltas) -> list[torch.Tensor]:
    """Add `deltas` to `params` in place (None: unchanged); returns copies of the original values for `restore_`."""
    backup = [p.detach().clone() for p in params]
    for p, d in zip(params, deltas):
        if d is not None:
            p.add_(d.to(p.dtype))
    return backup


@torch.no_grad()
def restore_(params, backup) -> None:
    """Copy `backup` back into `params` (bit-exact, unlike subtracting the perturbation)."""
    for p, b in zip(params, backup):
        p.copy_(b)


@contextlib.contextmanager
def discarded_metrics(metrics: dict):
    """Drop whatever is appended to `metrics` (a dict of lists, as the trainers' `_metrics[mode]`) inside the
    block: the forward at w + delta re-runs `compute_loss`, whose logging belongs to the step at w."""
    lengths = {k: len(v) for k, v in metrics.items()}
    try:
        yield
    finally:
        for key in list(metrics):
            if key not in lengths:
                del metrics[key]
            else:
                del metrics[key][lengths[key]:]


class SharpnessAwareMixin:
    """SAM (and the adversarial-relearning variant) for a transformers `Trainer` subclass; see the module docstring.

    A subclass calls `_init_sharpness_aware(...)` after `Trainer.__init__`, starts its `compute_loss` with
    ``if self._sam_armed: return self._sam_compute_loss(model, inputs, num_items_in_batch)``, and implements
    `sam_loss_parts(model, inputs, num_items_in_batch, forget_only)` -> (forget part, retain part or None), two
    tensors whose sum is what its `compute_loss` returns, and, for the adversarial variant, `sam_relearn_loss(model,
    inputs)` (the relearning adversary's loss on the forget batch). Off (rho = 0, k = 0): `training_step` is the
    parent's, untouched."""

    _sam_rho = 0.0
    _adv_steps = 0
    _adv_lr = 0.0
    _sam_armed = False

    def _init_sharpness_aware(self, sam_rho: float = 0.0, adv_relearn_steps: int = 0, adv_relearn_lr: float = 0.0):
        self._sam_rho, self._adv_steps, self._adv_lr = check_perturbation_options(sam_rho, adv_relearn_steps,
                                                                                  adv_relearn_lr)
        self._sam_armed = False
        self._sam_backup = self._sam_params = None
        sharded = getattr(self, "is_deepspeed_enabled", False) or getattr(self, "is_fsdp_enabled", False)
        if self._sam_active and sharded:
            raise ValueError("sam_rho / adv_relearn_steps perturb the trainable parameters in place, which sharded "
                             "parameters (DeepSpeed, FSDP) do not allow: use DDP or one device, or set them to 0.")

    @property
    def _sam_active(self) -> bool:
        return self._sam_rho > 0 or self._adv_steps > 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self._sam_active:
            return super().training_step(model, inputs, num_items_in_batch)
        self._sam_armed = True  # the parent's training_step calls compute_loss once: it becomes steps (a)-(c)
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._sam_armed = False
            if self._sam_backup is not None:  # (d): after the backward at w + delta
                restore_(self._sam_params, self._sam_backup)
            self._sam_backup = self._sam_params = None

    def _sam_loss_scale(self, num_items_in_batch) -> float:
        """The factor transformers' `training_step` applies to `compute_loss`'s value before its backward."""
        if (not self.model_accepts_loss_kwargs or num_items_in_batch is None) and self.compute_loss_func is None:
            return 1.0 / self.current_gradient_accumulation_steps
        return 1.0

    def _sam_compute_loss(self, model, inputs, num_items_in_batch=None):
        self._sam_armed = False  # the calls below take compute_loss's plain path
        params = [p for p in model.parameters() if p.requires_grad]
        with self.accelerator.no_sync(model):  # (a): local passes; DDP reduces once, in the backward of (c)
            forget, retain = self.sam_loss_parts(model, inputs, num_items_in_batch, forget_only=False)
            grads = None
            if self._sam_rho > 0:
                grads = torch.autograd.grad(forget, params, retain_graph=retain is not None, allow_unused=True)
            if retain is not None:  # the retain gradient at the unperturbed w
                self.accelerator.backward(retain * self._sam_loss_scale(num_items_in_batch))
            if self._sam_rho > 0:  # (b)
                deltas = sam_perturbation(grads, self._sam_rho)
                grad_norm = global_grad_norm(grads)
                del grads
                self._sam_params, self._sam_backup = params, perturb_(params, deltas)
            else:
                self._sam_params, self._sam_backup = params, [p.detach().clone() for p in params]
                grad_norm = self._relearn_(model, inputs, params)
        with discarded_metrics(self._metrics["train"]):  # (c)
            perturbed, _ = self.sam_loss_parts(model, inputs, num_items_in_batch, forget_only=True)
        self._log_sam_step(forget, perturbed, grad_norm, params)
        return perturbed if retain is None else perturbed + retain.detach()

    def _relearn_(self, model, inputs, params) -> torch.Tensor:
        """The adversary: `adv_relearn_steps` SGD steps of size `adv_relearn_lr` on `sam_relearn_loss`, in place.
        Returns the norm of its first gradient (logged)."""
        first = None
        for _ in range(self._adv_steps):
            grads = torch.autograd.grad(self.sam_relearn_loss(model, inputs), params, allow_unused=True)
            first = global_grad_norm(grads) if first is None else first
            with torch.no_grad():
                for p, g in zip(params, grads):
                    if g is not None:
                        p.sub_(g.to(p.dtype), alpha=self._adv_lr)
        return first

    @torch.no_grad()
    def _log_sam_step(self, forget, perturbed, grad_norm, params):
        gather = self.accelerator.gather_for_metrics
        delta = global_grad_norm([p - b for p, b in zip(params, self._sam_backup)])
        metrics = self._metrics["train"]
        for key, value in (("sam/forget_perturbed", perturbed), ("sam/forget_increase", perturbed - forget),
                           ("sam/grad_norm", grad_norm), ("sam/delta_norm", delta)):
            metrics[key].append(gather(value.detach().float().reshape(1).to(forget.device)).mean().item())


class WeightAveragingCallback(TrainerCallback):
    """Weight averaging (WA) of the unlearning iterates, the cheapest smoothing of Fan et al. 2025 (their
    `WeightAveragingCallback`, WMDP/src/model/unlearn.py: start_step 100 of 125 steps, interval 5).

    At every optimizer step s >= round(`start` * max_steps) (and >= 1) with s % `interval` == 0 the trainable
    parameters are added to a running uniform mean (float32, or the parameters' dtype if wider); at the end of
    training the model's trainable parameters are replaced by the mean. Theirs averages the whole state dict, which
    differs only in frozen tensors (unchanged by training). No extra forward or backward; memory: one float32 copy of
    the trainable parameters. Checkpoints and evaluations during training see the plain iterate; with no snapshot
    (training stopped before the first averaged step) the model is left as trained, with a warning."""

    def __init__(self, start: float = 0.8, interval: int = 5, horizon: int | None = None):
        if not (0 <= start < 1):
            raise ValueError(f"weight_averaging_start={start} is out of range: use a fraction of the run in [0, 1) "
                             "(0.8: the paper's step 100 of 125).")
        if isinstance(interval, bool) or int(interval) != interval or interval < 1:
            raise ValueError(f"weight_averaging_interval={interval} is out of range: use an integer >= 1 (steps "
                             "between snapshots; the paper's 5).")
        if horizon is not None and (isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1):
            raise ValueError(f"horizon={horizon} is out of range: use the step the run will stop at (>= 1), or None "
                             "for max_steps.")
        self.start, self.interval, self.horizon = float(start), int(interval), horizon
        self.mean, self.count, self.steps = None, 0, []

    def first_step(self, max_steps: int) -> int:
        """The first averaged step: `start` of `horizon` (a run stopped early at that step, e.g. by a callback),
        else of max_steps."""
        return max(1, round(self.start * (self.horizon or max_steps)))

    def on_train_begin(self, args, state, control, **kwargs):
        self.mean, self.count, self.steps = None, 0, []

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step < self.first_step(state.max_steps) or step % self.interval:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        if self.mean is None:
            self.mean = [p.detach().to(torch.promote_types(p.dtype, torch.float32)).clone() for p in params]
        else:
            for m, p in zip(self.mean, params):
                m.add_(p.detach().to(m.dtype) - m, alpha=1.0 / (self.count + 1))
        self.count += 1
        self.steps.append(step)

    @torch.no_grad()
    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.mean is None:
            warnings.warn(f"weight averaging: no snapshot was taken (training stopped at step {state.global_step}, "
                          f"before step {self.first_step(state.max_steps)}); the model is the last iterate.",
                          stacklevel=2)
            return
        for p, m in zip([p for p in model.parameters() if p.requires_grad], self.mean):
            p.copy_(m.to(p.dtype))
