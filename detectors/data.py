"""Recipe §1-2 "become one with the data" / "visualize just before the net": checks on
exactly what goes into the network."""
import numpy as np

from detectors.base import Detector, register_detector
from harness.probes import augmentation_agreement


@register_detector
class InputStats(Detector):
    """Per-channel mean and std of the batches just before the net.

    A normalized pipeline promises inputs with mean ~0 and std ~1 per channel. On
    clean runs the recorded batch means are within 0.01 of 0 (batches of 64 x 64+
    values), so |mean| > 0.3 or std outside [0.5, 2] is far outside clean variation
    and still catches a mean off by a third of a std.
    """

    name = "input_stats"
    description = "net inputs of a normalized pipeline have per-channel mean ~0 and std ~1"
    recipe_step = "visualize just before the net"
    stage, kind, cost = "data", "passive", 1
    requires = frozenset({"normalization"})
    example_bug = "wrong_normalization_mean"
    MAX_ABS_MEAN, STD_BAND = 0.3, (0.5, 2.0)

    def check(self, s):
        mean = np.mean(s.trace.input_mean, axis=0)
        std = np.mean(s.trace.input_std, axis=0)
        worst = float(np.abs(mean).max())
        bad_std = bool(((std < self.STD_BAND[0]) | (std > self.STD_BAND[1])).any())
        return self.decide(worst > self.MAX_ABS_MEAN or bad_std, worst, steps=len(s.trace.input_mean),
                           channel_mean=mean.round(4).tolist(), channel_std=std.round(4).tolist())


@register_detector
class AugmentationConsistency(Detector):
    """Does the label follow the augmentation? A model trained on un-augmented batches
    scores the augmented held-out examples that the augmentation changed.

    On clean flip_pairs this agreement is ~0.75 against ~0.89 un-augmented accuracy
    (ratio ~0.85: the model has never seen mirrored digits). Labels that did not follow
    the transform push agreement below chance; the flag is agreement < 0.5 x the
    model's accuracy on un-augmented held-out data.
    """

    name = "augmentation_consistency"
    description = "a model trained without augmentation agrees with the augmented labels"
    recipe_step = "visualize just before the net"
    stage, kind, cost = "data", "active", 3
    requires = frozenset({"flip_augmentation"})
    example_bug = "flip_without_label_swap"
    RATIO = 0.5
    STEPS = 100

    def check(self, s):
        agreement, base = augmentation_agreement(s, self.STEPS)
        ratio = agreement / base if base else float("nan")
        return self.decide(ratio < self.RATIO, 1 - ratio, steps=self.STEPS,
                           agreement_on_augmented=agreement, accuracy_unaugmented=base)
