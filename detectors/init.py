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

    Suite budget (2026-12-03, issue "Alarms a user can trust": 5% of legitimate runs for
    the whole suite, about 0.2% per detector, so a flag sits beyond every legitimate
    init the calibration side has). An init the recipe would change is *advice*, not an
    alarm: a ratio above 1.5 is ``advice``. Gain-scaled orthogonal, Xavier or Kaiming
    heads train fine from 1.6-3.9 x the analytical value (calibration population: 7 of 79
    clean draws above 1.5 x, the former flag; excess over the analytical value at most
    +1.97 nats, a binary head). A variance-preserving init gives the head roughly
    unit-variance logits, about +0.5 nats (sigma^2 / 2) over log C; so a cross-entropy
    loss more than ``EXCESS_NATS`` = 3 nats above its value (logits of std ~2.5 or
    more: weights scaled up beyond any such init) is flagged. For L2 the ratio is
    1 + (output variance + squared mean offset) / target variance, flagged above
    ``MAX_L2_RATIO`` = 4 (outputs three target variances off: a head that ignores a
    target mean ~1.7 sds from 0, calibration population max 1.8). Below half the
    analytical value the fresh model already knows the answers (leakage): flagged, as
    before (clean pipelines: 0.98-1.3 x, the fine-tuning head on pretrained features
    the high end)."""

    name = "loss_at_init"
    description = "loss at initialization is close to its analytical value (-log(1/C), prior entropy, target variance)"
    recipe_step = "verify loss @ init"
    stage, kind, cost = "init", "active", 2
    example_bug = "overconfident_output_init@high"  # x100: far beyond any legitimate init; x30 (mid) is not on every seed
    BAND, EXCESS_NATS, MAX_L2_RATIO = (0.5, 1.5), 3.0, 4.0
    # the analytical value exists for cross-entropy over classes or tokens and for L2;
    # a summed generative loss (a VAE's ELBO, ~5,700 nats at init on vae) has none
    KNOWN = frozenset({"classification", "binary", "regression", "autoregressive"})

    def applies_to(self, capabilities) -> bool:
        return super().applies_to(capabilities) and bool(self.KNOWN & set(capabilities))

    def check(self, s):
        loss, expected = init_loss(s)
        ratio = loss / expected
        high = ratio > self.MAX_L2_RATIO if "regression" in s.capabilities else loss - expected > self.EXCESS_NATS
        score = abs(math.log(ratio)) if ratio > 0 and math.isfinite(ratio) else math.inf  # a loss below 0: no NLL
        return self.decide(not math.isfinite(ratio) or ratio < self.BAND[0] or high, score, steps=0,
                           advice=ratio > self.BAND[1], loss_at_init=loss, expected=expected, excess=loss - expected)


@register_detector
class OutputInit(Detector):
    """"Init well": the mean prediction of a fresh model matches the data before any
    training: the class prior (KL(prior || mean predicted distribution); clean
    calibration pipelines: < 0.05 nats) or, for regression, the target mean (clean:
    within 0.05 target standard deviations).

    A mismatch beyond 0.1 nats (0.5 target sds) is the recipe's *advice* ("init the
    final bias" to the prior log-odds or the target mean): ``advice``, not a bug sign.
    A default-initialized head predicts nearly uniformly and simply lacks the prior in
    its bias, and training fixes the bias in its first steps (a skewed 28-way
    next-character prior gave 10/10 flags on clean runs when this was an alarm); and
    legitimate gain-scaled inits (orthogonal, Xavier, Kaiming with gain) make a fresh
    model opinionated example by example and miss the prior by up to 0.74 nats
    (calibration population: 15 of 73 clean draws above 0.1 with opinionated
    predictions, the former flag, every one training to a sensible metric).

    Suite budget (2026-12-03, issue "Alarms a user can trust": about 0.2% of legitimate
    runs per detector): flagged only beyond every legitimate init seen, KL above
    ``FLAG_KL`` = 1 nat (the prior's classes get, in geometric mean, e = 2.7 x less
    probability than the prior gives them) with example-level predictions that are not
    near-uniform (mean KL(uniform || prediction) > 0.1: weights scaled up, not a bias
    left at 0); for regression a mean prediction more than ``FLAG_Z`` = 2 target sds
    from the target mean (further off than ~95% of the targets themselves; calibration
    population max 0.82). Not applied to a new head on a pretrained backbone: its
    features are far from zero-mean, so a default-initialized head starts non-uniform
    (KL 0.17 on clean finetune) until the first steps fix it."""

    name = "output_init"
    description = "a fresh model's mean prediction matches the class prior / target mean"
    recipe_step = "init well"
    stage, kind, cost = "init", "active", 2
    excludes = frozenset({"pretrained_backbone"})
    example_bug = "overconfident_output_init@high"  # x100: far beyond any legitimate init; x30 (mid) is not on every seed
    MAX_KL, MAX_Z, FLAG_KL, FLAG_Z = 0.1, 0.5, 1.0, 2.0

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
            return self.decide(z > self.FLAG_Z and default > self.MAX_Z, z / self.MAX_Z, steps=0,
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
        return self.decide(kl > self.FLAG_KL and default > self.MAX_KL, kl / self.MAX_KL, steps=0,
                           advice=kl > self.MAX_KL, kl_prior_to_prediction=kl,
                           kl_uniform_to_example_predictions=default, prior=prior.numpy().round(3).tolist(),
                           mean_prediction=predicted.numpy().round(3).tolist())


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) in nats over the last axis."""
    return (p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(-1)
