"""Recipe §4 "regularize": does the network learn features at all, and is the held-out
curve believable?"""
import math

from recipebench.detectors.base import Detector, register_detector


@register_detector
class FirstLayerLearns(Detector):
    """The first weight matrix must move away from its initialization during training
    (relative change ||W_end - W_init|| / ||W_init||). Clean from-scratch pipelines:
    0.1-1.5; flagged below 0.01, where the first layer is frozen, detached or never
    registered with the optimizer. Not applied to fine-tuned backbones, whose first
    layer is supposed to move little."""

    name = "first_layer_learns"
    description = "first-layer weights change during training (features are learned, not left at noise)"
    recipe_step = "regularize: visualize first-layer weights"
    stage, kind, cost = "regularize", "passive", 1
    excludes = frozenset({"pretrained_backbone"})
    example_bug = "frozen_parameters"
    MIN_CHANGE = 0.01

    def check(self, s):
        change = s.trace.first_layer_change
        return self.decide(not change >= self.MIN_CHANGE, -math.log10(max(change, 1e-12)), steps=len(s.trace.loss),
                           relative_change=change)
