"""Loss bugs: the objective is not the one you meant (recipe §2 "overfit one batch")."""
import torch.nn.functional as F

from bugs.base import Bug, register_bug


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
