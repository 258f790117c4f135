"""Scheduler bugs on real torch schedulers (recipe §3 "do not trust learning rate decay
defaults"): the pipeline's own scheduler, stepped at the wrong interval or fed the
wrong value. Each is one substitution of the ``scheduler`` seam's declaration."""
import dataclasses

from recipebench.bugs.base import Bug, register_bug
from recipebench.harness.trace import as_list


def _redeclared(p, **change):
    """The pipeline with every scheduler it declares re-declared with ``change``."""
    build = p.scheduler

    def scheduler(opt, steps, steps_per_epoch):
        return [dataclasses.replace(s, **change) for s in as_list(build(opt, steps, steps_per_epoch))]

    return p.replace(scheduler=scheduler)


@register_bug
class SchedulerSteppedPerBatch(Bug):
    """A scheduler written for epochs (StepLR, MultiStepLR, cosine with T_max in
    epochs) whose ``step()`` is called inside the batch loop: every milestone arrives
    ``steps_per_epoch`` times too early."""

    name = "scheduler_stepped_per_batch"
    description = "an epoch scheduler's step() called every batch: the schedule runs steps_per_epoch times too fast"
    recipe_step = "do not trust learning rate decay defaults"
    source = ("https://github.com/pytorch/vision/pull/4411 (recipes differ in stepping per epoch or per iteration); "
              "https://github.com/ScrollPrize/villa/pull/1495 (per-epoch schedule stepped per iteration)")
    family = "optim"
    requires = frozenset({"epoch_scheduler"})
    symptom = "lr_moves_mid_epoch"
    expected_symptom = "the LR changes inside epochs; it decays (or cycles) long before training ends"

    def apply(self, p):
        return _redeclared(p, interval="step")


@register_bug
class WarmupSteppedPerEpoch(Bug):
    """A per-step warmup (linear warmup, one-cycle, nanoGPT's ``get_lr``) whose
    ``step()`` is called once per epoch: the LR is still warming up when training ends."""

    name = "warmup_stepped_per_epoch"
    description = "a per-iteration warmup schedule stepped once per epoch: the LR never leaves its warmup"
    recipe_step = "do not trust learning rate decay defaults"
    source = ("https://github.com/Tony-Y/pytorch_warmup/issues/14 (warmup stepped per epoch: the LR stuck low); "
              "https://github.com/crowsonkb/k-diffusion/issues/50 (steps vs epochs in a warmup schedule)")
    family = "optim"
    requires = frozenset({"warmup_scheduler"})
    symptom = "mean_lr_ratio"
    expected_symptom = "the mean LR is a small fraction of the configured LR; the loss falls slowly"

    def apply(self, p):
        return _redeclared(p, interval="epoch")


@register_bug
class PlateauFedTrainingLoss(Bug):
    """ReduceLROnPlateau given the training loss instead of the validation loss: the
    training loss keeps falling, so the LR is never reduced when validation stalls."""

    name = "plateau_fed_train_loss"
    description = "ReduceLROnPlateau.step() given the training loss instead of the validation loss"
    recipe_step = "do not trust learning rate decay defaults"
    source = ("https://github.com/unit8co/darts/pull/711 (ReduceLROnPlateau fed the training loss); "
              "https://github.com/moein-shariatnia/OpenAI-CLIP/issues/7")
    family = "optim"
    requires = frozenset({"plateau_scheduler"})
    symptom = "final_lr_ratio"
    expected_symptom = "the LR is never lowered: it ends higher than with the validation loss"

    def apply(self, p):
        return _redeclared(p, monitor="train_loss")
