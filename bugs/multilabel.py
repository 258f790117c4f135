"""Multi-label bugs: a loss that makes the labels compete, and a plateau scheduler
that reads a rising metric as a worsening one (recipe §3 "do not trust learning rate
decay defaults")."""
import torch
import torch.nn.functional as F

from recipebench.bugs.base import Bug, register_bug
from recipebench.harness.trace import as_list


@register_bug
class PlateauModeMinOnMetric(Bug):
    """``ReduceLROnPlateau`` left at its default ``mode="min"`` while it is given a
    validation accuracy or F1: every epoch the metric improves counts as a bad epoch,
    so the LR is cut while the model is still getting better."""

    name = "plateau_mode_min_on_metric"
    description = "ReduceLROnPlateau(mode='min') stepped with a validation metric that should rise"
    recipe_step = "do not trust learning rate decay defaults"
    source = ("https://github.com/md-mohaiminul/ViS4mer/issues/4 (ReduceLROnPlateau at its default 'min' mode "
              "stepped with accuracy; the author: 'not intended'); "
              "https://github.com/eecn/Hyperspectral-Classification/issues/19 (-val_acc passed to the 'min' mode)")
    family = "optim"
    requires = frozenset({"metric_plateau"})
    symptom = "mean_lr_ratio"
    expected_symptom = "the LR is cut every patience+1 epochs while the metric rises; lower mean LR, lower metric"

    def apply(self, p):
        build = p.scheduler

        def mode_min(opt, steps, steps_per_epoch):
            out = []
            for s in as_list(build(opt, steps, steps_per_epoch)):
                r = s.scheduler
                if isinstance(r, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    r = torch.optim.lr_scheduler.ReduceLROnPlateau(
                        r.optimizer, mode="min", factor=r.factor, patience=r.patience, threshold=r.threshold,
                        threshold_mode=r.threshold_mode, cooldown=r.cooldown, min_lr=list(r.min_lrs), eps=r.eps)
                out.append(type(s)(r, s.interval, s.monitor))
            return out

        return p.replace(scheduler=mode_min)


@register_bug
class SoftmaxCrossEntropyOnMultilabel(Bug):
    """Multi-hot targets given to ``nn.CrossEntropyLoss`` (softmax over the labels;
    torch >= 1.10 reads a float target as class probabilities and raises nothing): the
    labels compete for one unit of probability, so each logit no longer says whether
    its label is present, and the 0.5 threshold of evaluation means nothing."""

    name = "softmax_cross_entropy_on_multilabel"
    description = "multi-label targets trained with softmax cross-entropy over the labels instead of per-label BCE"
    recipe_step = "verify loss @ init"
    source = ("https://github.com/ThilinaRajapakse/simpletransformers/issues/101 (multi-label loss read as softmax "
              "cross-entropy); https://github.com/torchgeo/torchgeo/pull/791 (multi-label task used softmax "
              "instead of sigmoid); https://github.com/wenliangdai/Modality-Transferable-MER/issues/3 (README "
              "trained a multi-label set with ce instead of bce)")
    family = "loss"
    requires = frozenset({"multilabel"})
    symptom = "final_metric"
    expected_symptom = "logits are only defined up to a shift: per-label decisions at 0.5 are arbitrary; F1 drops"

    def apply(self, p):
        return p.replace(loss=lambda output, y: F.cross_entropy(output, y))  # y: (B, L) multi-hot floats
