"""Negative controls: legitimate variants of a pipeline that are NOT bugs.

Other optimizers, learning rates, batch sizes, schedules, regularizers and training
lengths that practitioners choose on purpose. A detector that flags them raises a
false alarm: their runs count with the clean runs in the out-of-sample false-positive
rate (split ``control`` in ``cells.csv``). They share the bug machinery (a variant is
one substitution at a seam) but are never counted as bugs, never in the default
catalog (``recipebench run --suite full`` adds them) and have no symptom to show.
"""
import torch
import torch.nn.functional as F

from recipebench.bugs.base import Bug, register_bug
from recipebench.harness.pipeline import (
    Scheduled, adam, cross_entropy, default_loader, no_scheduler, params_of, standard_train_step)


class Control(Bug):
    """A legitimate variant; ``applies_to`` also checks the seam it replaces is the
    default one (an optimizer swap is only a control where the pipeline used Adam)."""

    control = True
    family = "control"
    recipe_step = "(negative control: not a bug)"
    symptom = "final_metric"
    expected_symptom = "none: a legitimate choice; flagging it is a false alarm"
    source = "common practice (see the recipe's §5-6: tune, regularize)"
    seam_default: tuple = ()  # (seam, default) pairs the pipeline must still have

    def applies_to(self, pipeline) -> bool:
        return super().applies_to(pipeline) and all(getattr(pipeline, s) is d for s, d in self.seam_default)


def _optimizer_control(cls_name, name, description, make, doc="", tasks_left_out=frozenset()):
    def apply(self, p):
        return p.replace(optimizer=make)

    def applies_to(self, pipeline) -> bool:
        return Control.applies_to(self, pipeline) and pipeline.task not in tasks_left_out
    return register_bug(type(cls_name, (Control,), dict(
        name=name, description=description, requires=frozenset({"single_optimizer"}),
        seam_default=(("optimizer", adam),), apply=apply, applies_to=applies_to,
        __doc__=description + (f". {doc}" if doc else ""))))


SgdMomentum = _optimizer_control(
    "SgdMomentum", "control_sgd_momentum", "SGD with Nesterov momentum 0.9 at 10x the Adam learning rate",
    lambda named, lr: torch.optim.SGD(params_of(named), lr=10 * lr, momentum=0.9, nesterov=True),
    doc="A negative control must be legitimate code that trains. SGD's step is lr x gradient, so the 10x rule "
        "presumes a loss of order 1 per example, as Adam (scale-free) does not: on L2 regression against unscaled "
        "targets (regression: NaN on 5/5 seeds) and a VAE's summed ELBO (training failed on 3/5 seeds, the rest "
        "at -1e6 and below) it diverges, so it is not applied to regression or generation tasks (2026-12-03)",
    tasks_left_out=frozenset({"regression", "sequence_regression", "generation"}))
AdamWDecay = _optimizer_control(
    "AdamWDecay", "control_adamw", "AdamW, weight decay 0.01 on matrices only (the minGPT convention)",
    lambda named, lr: torch.optim.AdamW([{"params": [q for _, q in named if q.dim() >= 2], "weight_decay": 0.01},
                                         {"params": [q for _, q in named if q.dim() < 2], "weight_decay": 0.0}], lr=lr))
Adadelta = _optimizer_control(
    "Adadelta", "control_adadelta", "Adadelta at its default learning rate 1.0",
    lambda named, lr: torch.optim.Adadelta(params_of(named), lr=1.0))
RMSprop = _optimizer_control(
    "RMSprop", "control_rmsprop", "RMSprop at the pipeline's learning rate",
    lambda named, lr: torch.optim.RMSprop(params_of(named), lr=lr))
L2WeightDecay = _optimizer_control(
    "L2WeightDecay", "control_weight_decay", "Adam with L2 weight decay 1e-4",
    lambda named, lr: torch.optim.Adam(params_of(named), lr=lr, weight_decay=1e-4))


def _field_control(cls_name, name, description, change, requires=frozenset(), seam_default=()):
    def apply(self, p):
        return p.replace(**change(p))
    return register_bug(type(cls_name, (Control,), dict(
        name=name, description=description, requires=requires, seam_default=seam_default, apply=apply,
        __doc__=description)))


LrTimes3 = _field_control("LrTimes3", "control_lr_x3", "learning rate x 3", lambda p: {"lr": p.lr * 3})
LrDiv3 = _field_control("LrDiv3", "control_lr_div3", "learning rate / 3", lambda p: {"lr": p.lr / 3})
BatchTimes2 = _field_control("BatchTimes2", "control_batch_x2", "batch size x 2",
                             lambda p: {"batch_size": p.batch_size * 2}, seam_default=(("loader", default_loader),))
BatchDiv2 = _field_control("BatchDiv2", "control_batch_div2", "batch size / 2",
                           lambda p: {"batch_size": max(2, p.batch_size // 2)},
                           seam_default=(("loader", default_loader),))
HalfLength = _field_control("HalfLength", "control_half_length", "half the training steps",
                            lambda p: {"steps": p.steps // 2})
DoubleLength = _field_control("DoubleLength", "control_double_length", "twice the training steps",
                              lambda p: {"steps": p.steps * 2})
ClipAtFive = _field_control("ClipAtFive", "control_clip", "gradient-norm clipping at 5.0 (a sane norm)",
                            lambda p: {"clip_norm": 5.0}, requires=frozenset({"single_optimizer"}),
                            seam_default=(("train_step", standard_train_step),))


def _warmup_cosine(opt, steps, spe):
    warm = max(1, steps // 10)
    return Scheduled(torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=warm),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps - warm))], milestones=[warm]))


def _one_cycle(opt, steps, spe):
    return Scheduled(torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=steps))


WarmupCosine = _field_control("WarmupCosine", "control_warmup_cosine",
                              "linear warmup over 10% of training, then cosine decay to 0 (per step)",
                              lambda p: {"scheduler": _warmup_cosine}, requires=frozenset({"single_optimizer"}),
                              seam_default=(("scheduler", no_scheduler),))
OneCycle = _field_control("OneCycle", "control_one_cycle", "OneCycleLR peaking at the pipeline's learning rate",
                          lambda p: {"scheduler": _one_cycle}, requires=frozenset({"single_optimizer"}),
                          seam_default=(("scheduler", no_scheduler),))
LabelSmoothing = _field_control("LabelSmoothing", "control_label_smoothing", "cross-entropy with label smoothing 0.1",
                                lambda p: {"loss": lambda out, y: F.cross_entropy(out, y, label_smoothing=0.1)},
                                requires=frozenset({"classification"}), seam_default=(("loss", cross_entropy),))


@register_bug
class DropoutBeforeHead(Control):
    """Dropout (p = 0.1) on the input of the output layer."""

    name = "control_dropout"
    description = "dropout 0.1 on the output layer's input"
    requires = frozenset({"feature_layers"})

    def apply(self, p):
        build = p.build_model

        def with_dropout(pipeline):
            model = build(pipeline)
            head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            head.register_forward_pre_hook(lambda m, args: (F.dropout(args[0], 0.1, m.training),) + args[1:])
            return model

        return p.replace(build_model=with_dropout)
