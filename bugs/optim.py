"""Optimization bugs: the update rule or schedule is wrong (recipe §3 "do not trust
learning rate decay defaults")."""
import torch

from recipebench.bugs.base import Bug, register_bug
from recipebench.harness.pipeline import Scheduled, params_of


@register_bug
class EpochBasedLRDecay(Bug):
    """Step decay (x0.1 every ``level`` epochs) copied from a large-dataset recipe.

    There an epoch is thousands of steps; on this data it is ~16, so the LR is
    driven toward zero long before the model converges.
    """

    name = "epoch_based_lr_decay"
    description = "LR divided by 10 every k epochs (schedule keyed to epochs from another domain)"
    recipe_step = "do not trust learning rate decay defaults"
    source = ("https://karpathy.github.io/2019/04/25/recipe/ (§3: 'ImageNet would decay by 10 on epoch 30'); "
              "pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.StepLR.html")
    family = "optim"
    requires = frozenset({"lr_schedule"})
    symptom = "lr_decades_at_half"
    expected_symptom = "LR falls by orders of magnitude while the training loss is still falling; accuracy drops"
    severities = {"low": 4, "mid": 2, "high": 1}  # epochs between decays
    default_severity = "mid"

    def apply(self, p):
        every = self.level

        def step_lr(opt, steps, steps_per_epoch):
            return Scheduled(torch.optim.lr_scheduler.StepLR(opt, step_size=every, gamma=0.1), interval="epoch")

        return p.replace(scheduler=step_lr)


@register_bug
class MissingZeroGrad(Bug):
    """``optimizer.zero_grad()`` missing: every step adds its gradient to all earlier ones."""

    name = "missing_zero_grad"
    description = "no optimizer.zero_grad(): gradients accumulate across steps"
    recipe_step = "verify decreasing training loss"
    source = "https://twitter.com/karpathy/status/1013244313327681536 ('you forgot to .zero_grad() before .backward()')"
    family = "optim"
    requires = frozenset()
    symptom = "grad_carryover"
    expected_symptom = "a second identical step at LR 0 finds the first step's gradient still in .grad; worse metric"

    def apply(self, p):
        build = p.optimizer

        def optimizer_never_zeroed(named_params, lr):
            opt = build(named_params, lr)
            for o in opt if isinstance(opt, (list, tuple)) else (opt,):
                o.zero_grad = lambda set_to_none=True: None  # BUG: the call is missing from the loop
            return opt

        return p.replace(optimizer=optimizer_never_zeroed)


@register_bug
class EpochSchedulerPerIteration(Bug):
    """A cosine schedule with ``T_max`` in epochs stepped every iteration: the LR swings
    from peak to zero and back every few steps."""

    name = "per_epoch_scheduler_per_iteration"
    description = "CosineAnnealingLR(T_max=epochs) stepped per batch: LR cycles to zero every T_max steps"
    recipe_step = "do not trust learning rate decay defaults"
    source = ("https://github.com/ScrollPrize/villa/pull/1495 (per-iteration schedulers given an epoch count: LR "
              "decays to zero 140 times); https://github.com/pytorch/vision/issues/1261")
    family = "optim"
    requires = frozenset({"lr_schedule"})
    symptom = "lr_oscillations"
    expected_symptom = "the LR hits ~0 many times during training; worse metric"
    severities = {"low": 20, "mid": 10, "high": 5}  # T_max: the number of epochs the schedule was written for
    default_severity = "mid"

    def apply(self, p):
        t_max = self.level

        def cosine_stepped_per_batch(opt, steps, steps_per_epoch):
            return Scheduled(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max), interval="step")

        return p.replace(scheduler=cosine_stepped_per_batch)


@register_bug
class ClipWithoutEffect(Bug):
    """``torch.clamp(p.grad, -c, c)`` whose result is thrown away (not in place): the
    gradients are never clipped."""

    name = "clip_has_no_effect"
    description = "gradient clipping written out of place (result discarded): no clipping happens"
    recipe_step = "use backprop to chart dependencies"
    source = "https://github.com/pytorch/tutorials/pull/30 (param.grad.data.clamp(-1, 1) had no effect; clamp_ was meant)"
    family = "optim"
    requires = frozenset({"grad_clipping"})
    symptom = "max_grad_norm"
    expected_symptom = "gradient norms above the clip threshold reach the optimizer"

    def apply(self, p):
        def clip_out_of_place(model, max_norm):
            for q in model.parameters():
                if q.grad is not None:
                    torch.clamp(q.grad, -max_norm, max_norm)  # result discarded

        return p.replace(clip=clip_out_of_place)


@register_bug
class ExtremeWeightDecay(Bug):
    """Weight decay applied to every parameter, biases and norms included, at a value
    meant for a loss summed over a batch (``weight_decay=0.1 * batch_size``)."""

    name = "extreme_weight_decay"
    description = "AdamW weight decay applied to all parameters (biases, norms) at an extreme value"
    recipe_step = "weight decay"
    source = ("https://github.com/Lightning-AI/lit-llama/issues/254 (decay applied to every layer; cf. "
              "https://github.com/karpathy/minGPT/pull/24)")
    family = "optim"
    requires = frozenset({"single_optimizer"})
    symptom = "weight_norm_ratio"
    expected_symptom = "parameter norms shrink during training; metric drops"
    severities = {"low": 1.0, "mid": 5.0, "high": 20.0}
    default_severity = "mid"

    def apply(self, p):
        wd = self.level
        return p.replace(optimizer=lambda named, lr: torch.optim.AdamW(params_of(named), lr=lr, weight_decay=wd))


@register_bug
class ClipAfterStep(Bug):
    """``clip_grad_norm_`` called after ``optimizer.step()``: the update already used
    the unclipped gradients, and the clipped ones are zeroed before the next use."""

    name = "clip_after_step"
    description = "gradient clipping called after optimizer.step(): the optimizer steps with unclipped gradients"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://github.com/jongwook/onsets-and-frames/issues/24; https://github.com/awslabs/graphstorm/issues/1366 "
              "(clip_grad_norm_ after step(): --max-grad-norm silently does nothing)")
    family = "optim"
    requires = frozenset({"grad_clipping", "single_optimizer"})
    symptom = "max_grad_norm"
    expected_symptom = "gradient norms above the clip threshold reach the optimizer"

    def apply(self, p):
        def clip_after_step(pipeline, model, opt, x, y, ctx):
            opt.zero_grad(set_to_none=True)
            loss = pipeline.step_loss(pipeline, model, x, y)
            loss.backward()
            opt.step()
            pipeline.clip(model, pipeline.clip_norm)  # BUG: belongs between backward() and step()
            return loss

        return p.replace(train_step=clip_after_step)
