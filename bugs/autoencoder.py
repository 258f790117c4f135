"""Autoencoder bugs: the reconstruction target or its loss wired wrong (recipe §1
"become one with the data", §2 "verify loss @ init")."""
import torch.nn.functional as F

from recipebench.bugs.base import Bug, register_bug


@register_bug
class NoisyTargetInDenoising(Bug):
    """A denoising autoencoder fitted with the noisy image as its target as well as its
    input (``fit(x=noisy, y=noisy)``): it learns the identity, noise included, and
    removes no noise. Assumes a denoising pipeline (input noisy, target clean); on a
    plain autoencoder the target already is the input."""

    name = "noisy_target_in_denoising"
    description = "denoising autoencoder trained with the noisy input as its target instead of the clean image"
    recipe_step = "become one with the data"
    source = ("https://github.com/aapatel09/handson-unsupervised-learning/issues/6 ('why the target label of the "
              "fitting phase is the noisy input ... the autoencoder learns to reconstruct the noisy input')")
    family = "data"
    requires = frozenset({"reconstruction"})
    symptom = "final_metric"
    expected_symptom = "the denoised test images stay about as noisy as the inputs; test MSE near the identity's"

    def apply(self, p):
        unpack = p.unpack

        def noisy_pairs(batch):
            x, _ = unpack(batch)
            return x, x  # BUG: the target should be the clean image

        return p.replace(unpack=noisy_pairs)


@register_bug
class SigmoidBeforeBceWithLogits(Bug):
    """The decoder already ends in a sigmoid, and the loss is ``BCEWithLogitsLoss``,
    which applies another: the loss sees sigmoid(sigmoid(z)), confined to [0.5, 0.73],
    so every pixel darker than 0.5 pushes the reconstruction to 0 and the rest are
    distorted (a Keras ``binary_crossentropy`` ported to PyTorch as the logits loss)."""

    name = "sigmoid_before_bce_with_logits"
    description = "BCEWithLogitsLoss on a sigmoid output: the sigmoid is applied twice in the loss"
    recipe_step = "verify loss @ init"
    source = ("https://github.com/yudi-mars/daisyRec/pull/15 ('Do not need sigmoid because there is sigmoid in "
              "BCEWithLogitsLoss. Otherwise loss does not converge'); "
              "https://github.com/itakurah/focal-loss-pytorch/pull/5 "
              "(sigmoid twice: 'the lowest score the model will see is 0.5')")
    family = "loss"
    requires = frozenset({"reconstruction"})
    symptom = "final_metric"
    expected_symptom = "the loss cannot fall below ~0.6 of BCE; reconstructions lose their dark and mid-grey pixels"

    def apply(self, p):
        def bce_with_logits(output, y):
            return F.binary_cross_entropy_with_logits(output, y)  # BUG: output is already a sigmoid

        return p.replace(loss=bce_with_logits)
