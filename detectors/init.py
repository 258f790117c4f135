"""Recipe §2 "verify loss @ init": the loss of a fresh model matches its analytical value."""
import math

import torch

from recipebench.detectors.base import Detector, register_detector
from recipebench.harness.probes import init_loss


@register_detector
class LossAtInit(Detector):
    """Loss of a fresh model on the first batches vs its analytical value
    (:func:`recipebench.harness.probes.expected_init_loss`: -log(1/C), the prior entropy when the
    output bias is initialized to the prior, the target variance for L2).

    Clean pipelines measure 0.98-1.3 x the analytical value (the fine-tuning head on
    pretrained features is the high end), so the flag is a ratio outside [0.5, 1.5].
    """

    name = "loss_at_init"
    description = "loss at initialization is close to its analytical value (-log(1/C), prior entropy, target variance)"
    recipe_step = "verify loss @ init"
    stage, kind, cost = "init", "active", 2
    example_bug = "overconfident_output_init"
    BAND = (0.5, 1.5)
    # the analytical value exists for cross-entropy over classes or tokens and for L2;
    # a summed generative loss (a VAE's ELBO, ~5,700 nats at init on vae) has none
    KNOWN = frozenset({"classification", "binary", "regression", "autoregressive"})

    def applies_to(self, capabilities) -> bool:
        return super().applies_to(capabilities) and bool(self.KNOWN & set(capabilities))

    def check(self, s):
        loss, expected = init_loss(s)
        ratio = loss / expected
        return self.decide(not (self.BAND[0] <= ratio <= self.BAND[1]), abs(math.log(ratio)), steps=0,
                           loss_at_init=loss, expected=expected)


@register_detector
class OutputInit(Detector):
    """"Init well": the mean prediction of a fresh model matches the data before any
    training: the class prior (KL(prior || mean predicted distribution) <= 0.1 nats;
    clean calibration pipelines: < 0.05) or, for regression, the target mean (within 0.5
    target standard deviations; clean: < 0.05).

    A mismatch is one of two things. A default-initialized head predicts nearly uniformly
    on every example (mean per-example KL(uniform || prediction) <= 0.1 nats; for L2 an
    output within 0.5 target sds of 0): the prior is simply not in its bias yet, and the
    recipe's *advice* applies ("init the final bias" to the prior log-odds or the target
    mean). That is the ``advice`` outcome, not a bug sign: training fixes the bias in its
    first steps (a skewed 28-way next-character prior gave 10/10 flags on clean runs
    before this split, with ``loss_at_init`` passing). A fresh model that is opinionated
    example by example and still misses the prior (weights scaled up at init) is flagged.
    Not applied to a new head on a pretrained backbone: its features are far from
    zero-mean, so a default-initialized head starts non-uniform (KL 0.17 on clean
    finetune) until the first steps fix it."""

    name = "output_init"
    description = "a fresh model's mean prediction matches the class prior / target mean"
    recipe_step = "init well"
    stage, kind, cost = "init", "active", 2
    excludes = frozenset({"pretrained_backbone"})
    example_bug = "overconfident_output_init"
    MAX_KL, MAX_Z = 0.1, 0.5

    def applies_to(self, capabilities) -> bool:
        return super().applies_to(capabilities) and bool({"classification", "binary", "regression"} & set(capabilities))

    def check(self, s):
        p = s.prepared
        model = s.fresh_model()
        model.eval()
        with torch.no_grad():
            out = s.forward(model, p.x_train[:256]).double()
        if "regression" in s.capabilities:
            y = p.y_train.double()
            z = float(abs(out.mean() - y.mean()) / y.std())
            default = float(out.abs().mean() / y.std())  # a default init's outputs sit near 0
            return self.decide(z > self.MAX_Z and default > self.MAX_Z, z / self.MAX_Z, steps=0,
                               advice=z > self.MAX_Z, mean_prediction=float(out.mean()),
                               target_mean=float(y.mean()), target_std=float(y.std()),
                               mean_abs_output_in_target_sds=default)
        if "binary" in s.capabilities:
            q1 = torch.sigmoid(out.squeeze(-1))
            per_example = torch.stack([1 - q1, q1], -1)  # (examples, 2)
        else:
            per_example = torch.softmax(out, -1)  # (examples, classes)
        predicted = per_example.mean(0)
        prior = torch.as_tensor(s.class_prior, dtype=torch.float64)
        kl = float(_kl(prior, predicted))
        uniform = torch.full_like(predicted, 1 / len(predicted))
        default = float(_kl(uniform, per_example).mean())
        return self.decide(kl > self.MAX_KL and default > self.MAX_KL, kl / self.MAX_KL, steps=0,
                           advice=kl > self.MAX_KL, kl_prior_to_prediction=kl,
                           kl_uniform_to_example_predictions=default, prior=prior.numpy().round(3).tolist(),
                           mean_prediction=predicted.numpy().round(3).tolist())


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) in nats over the last axis."""
    return (p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(-1)
