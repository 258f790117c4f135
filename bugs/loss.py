"""Loss bugs: the objective is not the one you meant (recipe §2 "overfit one batch")."""
import torch.nn.functional as F

from recipebench.bugs.base import Bug, register_bug


@register_bug
class ClippedLossNotGradients(Bug):
    """Per-example loss clamped at ``level`` where gradient clipping was intended.

    Examples whose loss exceeds the cap get exactly zero gradient, so the outliers
    (the hardest, most informative examples) are ignored; grad clipping is dropped.
    """

    name = "clipped_loss_not_gradients"
    description = "loss.clamp(max=c) per example instead of clip_grad_norm_: high-loss examples get no gradient"
    recipe_step = "overfit one batch"
    source = ("https://karpathy.github.io/2019/04/25/recipe/ (§2: 'clipped the loss, causing the outlier "
              "examples to be ignored')")
    family = "loss"
    requires = frozenset({"grad_clipping", "classification"})
    symptom = "wrong_zero_grad_frac"
    expected_symptom = "misclassified examples with exactly zero gradient; accuracy drops"
    severities = {"low": 3.0, "mid": 2.5, "high": 2.0}  # the cap c (uniform 10-class loss is 2.30)
    default_severity = "mid"

    def apply(self, p):
        cap = self.level

        def clamped(output, y):
            return F.cross_entropy(output, y, reduction="none").clamp(max=cap).mean()

        return p.replace(loss=clamped, clip=lambda model, max_norm: None)


@register_bug
class MSEBroadcast(Bug):
    """A hand-written L2 loss between predictions of shape (N, 1) and targets of shape (N,):
    broadcasting makes an (N, N) matrix, so every prediction is pulled to every target
    and the model learns the mean. (``F.mse_loss`` would warn; the hand-written one is silent.)"""

    name = "mse_broadcast"
    description = "((pred - y) ** 2).mean() with pred (N, 1) and y (N,): an (N, N) loss that teaches the mean"
    recipe_step = "overfit one batch"
    source = "https://github.com/pytorch/pytorch/issues/16045 (broadcasting in MSE between (N,1) and (N,))"
    family = "loss"
    requires = frozenset({"regression"})
    symptom = "final_metric"
    expected_symptom = "predictions collapse to the target mean; R^2 near 0"

    def apply(self, p):
        return p.replace(loss=lambda output, y: ((output - y) ** 2).mean())  # (N, 1) - (N,) -> (N, N)


@register_bug
class BCEBroadcast(Bug):
    """A hand-written binary cross-entropy between logits (N, 1) and targets (N,): the
    (N, N) broadcast pairs every logit with every label."""

    name = "bce_target_broadcast"
    description = "binary cross-entropy with logits (N, 1) and targets (N,) broadcast to (N, N)"
    recipe_step = "overfit one batch"
    source = "https://github.com/pytorch/pytorch/pull/18349 (losses between (n, 1) and (n,) broadcast to (n, n))"
    family = "loss"
    requires = frozenset({"binary"})
    symptom = "final_metric"
    expected_symptom = "every logit is pulled to the base rate; ranking quality (average precision) drops"

    def apply(self, p):
        def broadcast_bce(output, y):  # (N, 1) and (N,) -> (N, N)
            return -(y * F.logsigmoid(output) + (1 - y) * F.logsigmoid(-output)).mean()

        return p.replace(loss=broadcast_bce)


@register_bug
class TargetsWrongLayout(Bug):
    """Logits flattened in (B, T) order, targets in (T, B) order (``y.t().reshape(-1)``),
    so each prediction is scored against another sequence's character."""

    name = "loss_targets_wrong_layout"
    description = "sequence targets flattened time-major while logits are batch-major: misaligned targets"
    recipe_step = "overfit one batch"
    source = ("https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html (sequence targets must match "
              "the logits' layout); https://github.com/pytorch/pytorch/issues/83270")
    family = "loss"
    requires = frozenset({"autoregressive", "window_targets"})
    symptom = "final_metric"
    expected_symptom = "loss plateaus near the unigram entropy; next-token accuracy drops"

    def apply(self, p):
        def misaligned(logits, window):
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].t().reshape(-1))

        return p.replace(loss=misaligned)
