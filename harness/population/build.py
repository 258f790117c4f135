"""A :class:`~recipebench.harness.population.grammar.Recipe` as a complete
:class:`~recipebench.harness.pipeline.Pipeline`, with the capabilities it honestly offers."""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from recipebench.harness.pipeline import Pipeline, Scheduled, adam, decay_groups, params_of
from recipebench.harness.population import models
from recipebench.harness.population.data import CONTEXT, load, minmax_on_train, standardize_targets
from recipebench.harness.population.grammar import Recipe


# ---- losses and metrics (higher is better; each task's trivial baseline: data.baseline) --------

def loss_fn(r: Recipe):
    if r.task == "classification":
        return partial(F.cross_entropy, label_smoothing=r.label_smoothing) if r.label_smoothing else F.cross_entropy
    if r.task == "binary":
        return lambda out, y: F.binary_cross_entropy_with_logits(out.squeeze(-1), y.float())  # (B,) vs (B,)
    if r.task == "multilabel":
        return F.binary_cross_entropy_with_logits  # (B, L) vs (B, L)
    if r.task == "language_model":  # position t predicts token t + 1 of the window
        return lambda logits, w: F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
    if r.task == "reconstruction":
        return F.mse_loss if r.loss == "mse" else F.binary_cross_entropy  # the decoder ends in a sigmoid
    point = {"l2": F.mse_loss, "huber": F.smooth_l1_loss, "l1": F.l1_loss}[r.loss]
    return lambda out, y: point(out.squeeze(-1), y)  # (B,) vs (B,)


def _outputs(model, x, forward) -> torch.Tensor:
    was = model.training
    model.eval()
    with torch.no_grad():
        parts = [forward(model, xb) for xb in x.split(512)]
    model.train(was)
    return torch.cat(parts)


def evaluate_fn(r: Recipe, forward):
    """The reported metric: accuracy, per-label accuracy, last-position next-token
    accuracy, or R^2 (regression, reconstruction)."""
    from recipebench.harness.population.data import r2

    def metric(model, x, y) -> float:
        out = _outputs(model, x, forward)
        if r.task == "classification":
            return float((out.argmax(-1) == y).float().mean())
        if r.task == "binary":
            return float(((out.squeeze(-1) > 0).long() == y).float().mean())
        if r.task == "multilabel":
            return float(((out > 0) == (y > 0.5)).float().mean())
        if r.task == "language_model":
            return float((out[:, -1].argmax(-1) == x[:, -1]).float().mean())
        return r2(out.squeeze(-1).numpy() if r.task == "regression" else out.numpy(), y.numpy())
    return metric


# ---- optimizers, schedules, the train step --------------------------------------------------

def optimizer_fn(r: Recipe):
    wd, name = r.weight_decay, r.optimizer
    if name == "adam" and not wd:
        return adam  # the harness's own Adam: what a script that writes Adam(params, lr) does
    if name == "adamw":
        return lambda named, lr: torch.optim.AdamW(decay_groups(named, wd), lr=lr)
    make = {"sgd": partial(torch.optim.SGD, weight_decay=wd),
            "sgd_momentum": partial(torch.optim.SGD, momentum=0.9, weight_decay=wd),
            "sgd_nesterov": partial(torch.optim.SGD, momentum=0.9, nesterov=True, weight_decay=wd),
            "adam": partial(torch.optim.Adam, weight_decay=wd), "rmsprop": partial(torch.optim.RMSprop, weight_decay=wd),
            "adagrad": partial(torch.optim.Adagrad, weight_decay=wd), "adadelta": torch.optim.Adadelta}[name]
    return lambda named, lr: make(params_of(named), lr=lr)


def update_steps(steps: int, spe: int, k: int) -> int:
    """Optimizer steps of a training of ``steps`` loader batches stepping every ``k``-th
    batch and at each epoch's end (Hugging Face's ``num_update_steps_per_epoch``)."""
    epochs, rest = divmod(steps, spe)
    return epochs * math.ceil(spe / k) + math.ceil(rest / k)


def scheduler_fn(r: Recipe):
    lrs = torch.optim.lr_scheduler

    def build(opt, steps, spe):
        total = max(1, update_steps(steps, spe, r.accumulate))  # optimizer steps
        epochs = max(1, math.ceil(steps / spe))
        warm = max(1, total // 10)
        if r.schedule == "step":
            return Scheduled(lrs.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.3), interval="epoch")
        if r.schedule == "multistep":
            return Scheduled(lrs.MultiStepLR(opt, [max(1, epochs // 2), max(2, 3 * epochs // 4)], gamma=0.1),
                             interval="epoch")
        if r.schedule == "exponential":  # to 5% of the initial LR by the end
            n = total if r.per_step else epochs
            return Scheduled(lrs.ExponentialLR(opt, gamma=0.05 ** (1 / n)), interval="step" if r.per_step else "epoch")
        if r.schedule == "cosine":
            return Scheduled(lrs.CosineAnnealingLR(opt, T_max=total if r.per_step else epochs),
                             interval="step" if r.per_step else "epoch")
        if r.schedule == "warmup_cosine":
            return Scheduled(lrs.SequentialLR(opt, [lrs.LinearLR(opt, start_factor=0.01, total_iters=warm),
                                                    lrs.CosineAnnealingLR(opt, T_max=max(1, total - warm))],
                                              milestones=[warm]))
        if r.schedule == "warmup_linear":  # get_linear_schedule_with_warmup
            return Scheduled(lrs.LambdaLR(opt, lambda s: s / warm if s < warm else max(0.0, (total - s) / max(1, total - warm))))
        if r.schedule == "onecycle":
            return Scheduled(lrs.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total))
        if r.schedule == "plateau_loss":
            return Scheduled(lrs.ReduceLROnPlateau(opt, mode="min", factor=0.3, patience=2), interval="epoch",
                             monitor="val_loss")
        return Scheduled(lrs.ReduceLROnPlateau(opt, mode="max", factor=0.3, patience=2), interval="epoch",
                         monitor="val_metric")
    return build
