"""Recipe §2 "use backprop to chart dependencies": gradients show what depends on what."""
from detectors.base import Detector, register_detector
from harness.probes import batch_leak_fraction

BATCH = 16


@register_detector
class BatchDependency(Detector):
    """Sum the outputs of example i, backprop to the input batch, and require a
    non-zero gradient on example i only. Independent examples give exactly 0 on
    the others (eval mode, so batch norm and dropout cannot mix them), so any
    leak above float noise (1e-6 of the gradient mass) is flagged.
    """

    name = "batch_dependency"
    description = "each output's gradient reaches only its own input example"
    recipe_step = "use backprop to chart dependencies"
    stage, kind, cost = "backprop", "active", 2
    example_bug = "view_instead_of_permute"
    TOLERANCE = 1e-6

    def check(self, s):
        leak = s.memo("batch_leak", lambda: batch_leak_fraction(s.fresh_model(), s.prepared.x_val[:BATCH]))
        return self.decide(leak > self.TOLERANCE, leak, steps=0, leak_fraction=leak, batch=BATCH)
