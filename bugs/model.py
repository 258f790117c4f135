"""Model bugs: the architecture does something other than what its shapes suggest
(recipe §2 "use backprop to chart dependencies")."""
import torch

from bugs.base import Bug, register_bug


def view_to_sequence(x):
    return x.view(x.shape[1], x.shape[0], -1)  # (B, T, F) -> "(T, B, F)", batch items mixed


@register_bug
class ViewInsteadOfPermute(Bug):
    """``x.view(T, B, F)`` where ``x.permute(1, 0, 2)`` belonged: shapes match, items mix."""

    name = "view_instead_of_permute"
    description = "batch-first to time-first with view() instead of permute(): sequences mix batch items"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://karpathy.github.io/2019/04/25/recipe/ (§2 'use backprop to chart dependencies'); "
              "stackoverflow.com/questions/51143206")
    family = "model"
    requires = frozenset({"sequence_model"})
    symptom = "batch_leak"
    expected_symptom = "each output depends on other items of the batch; predictions change with batch composition"

    def apply(self, p):
        return p.replace(to_sequence=view_to_sequence)


@register_bug
class OverconfidentOutputInit(Bug):
    """Final layer initialized with weights ``level`` x too large (e.g. ``normal_(std=1)``
    on a wide layer): the net starts confidently wrong, far from -log(1/C)."""

    name = "overconfident_output_init"
    description = "output layer weights scaled up at init: loss @ init far above -log(1/C), hockey-stick loss"
    recipe_step = "verify loss @ init"
    source = ("https://karpathy.github.io/2019/04/25/recipe/ (§2 'verify loss @ init', 'init well'); "
              "https://cs231n.github.io/neural-networks-3/#sanitycheck")
    family = "model"
    requires = frozenset({"classification"})
    symptom = "init_loss_ratio"
    expected_symptom = "loss at init several times -log(1/C); slower, worse convergence"
    severities = {"low": 10.0, "mid": 30.0, "high": 100.0}
    default_severity = "mid"

    def apply(self, p):
        build, scale = p.build_model, self.level

        def build_overconfident(pipeline):
            model = build(pipeline)
            last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                last.weight.mul_(scale)
            return model

        return p.replace(build_model=build_overconfident)
