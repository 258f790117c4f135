"""Data bugs: what goes into the net is not what you think (recipe §1 "become one
with the data" and §2 "visualize just before the net")."""
import torch

from bugs.base import Bug, register_bug
from harness.pipeline import Normalizer

RECIPE = "https://karpathy.github.io/2019/04/25/recipe/"


@register_bug
class FlipWithoutLabelSwap(Bug):
    """Horizontal flip applied to the input; the orientation-dependent label is left as is."""

    name = "flip_without_label_swap"
    description = "flip augmentation flips the image but does not swap the left/right label"
    recipe_step = "visualize just before the net"
    source = f"{RECIPE} (§2: 'forgot to flip your labels'); github.com/princeton-vl/pytorch_stacked_hourglass/issues/43"
    family = "data"
    requires = frozenset({"flip_augmentation"})
    symptom = "augmented_label_agreement"
    expected_symptom = "labels of flipped examples contradict the flipped input; accuracy drops"
    severities = {"low": 0.15, "mid": 0.3, "high": 0.5}  # probability that a training example is flipped
    default_severity = "high"

    def apply(self, p):
        prob = self.level

        def flip_only(x, y, gen):
            flip = torch.rand(len(y), generator=gen) < prob  # (B,)
            return torch.where(flip[:, None, None, None], x.flip(-1), x), y  # label unchanged

        return p.replace(augment=flip_only)


@register_bug
class WrongNormalizationMean(Bug):
    """Inputs normalized with a mean that is off by ``level`` training-set std.

    Happens when constants are copied from another dataset (ImageNet's 0.485...) or
    computed on another split; worst after fine-tuning a pretrained backbone.
    """

    name = "wrong_normalization_mean"
    description = "normalization subtracts a wrong mean (off by 0.5 / 1 / 2 std of the training data)"
    recipe_step = "visualize just before the net"
    source = f"{RECIPE} (§2: 'didn't use the original mean'); discuss.pytorch.org/t/normalization-in-the-mnist-example/457"
    family = "data"
    requires = frozenset({"normalization"})
    symptom = "input_mean_abs"
    expected_symptom = "net inputs have per-channel mean far from 0; pretrained features degrade"
    severities = {"low": 0.5, "mid": 1.0, "high": 2.0}
    default_severity = "mid"

    def apply(self, p):
        offset, fit = self.level, p.fit_normalizer

        def wrong_mean(x_train):
            n = fit(x_train)
            return Normalizer(n.mean - offset * n.std, n.std)

        return p.replace(fit_normalizer=wrong_mean)
