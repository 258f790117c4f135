"""Recipe §2 "verify loss @ init": the loss of a fresh model matches its analytical value."""
import math

from detectors.base import Detector, register_detector
from harness.probes import init_loss


@register_detector
class LossAtInit(Detector):
    """Loss of a fresh model on the first batches vs its analytical value
    (:func:`harness.probes.expected_init_loss`: -log(1/C), the prior entropy when the
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

    def check(self, s):
        loss, expected = init_loss(s)
        ratio = loss / expected
        return self.decide(not (self.BAND[0] <= ratio <= self.BAND[1]), abs(math.log(ratio)), steps=0,
                           loss_at_init=loss, expected=expected)
