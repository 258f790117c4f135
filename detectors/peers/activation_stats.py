"""fastai's ``ActivationStats`` (fastai 2.8.12, Apache-2.0; ``fastai.callback.hook``): the
activation statistics fastai users plot with ``learn.activation_stats.plot_layer_stats``
to see whether a layer's activations die during training ("% near zero", fastai book
chapter 13), run by fastai's own code on the pipeline's own training.

What runs: fastai's ``ActivationStats.hook`` (mean, std and ``near_zero``, the share of
outputs <= 0.05; for RNN outputs fastai's ``hook_multi_ouput``, of which the output
sequence is kept) on the modules fastai's ``HookCallback`` picks by default
(``flatten_model`` + ``has_params``), during every training forward pass of the
pipeline's full training (``s.train``: its optimizer, param groups, schedulers and
clipping). fastai records training batches only; so does the adapter. fastai's
``Learner.fit`` is not used: it sets one learning rate on every param group and does not
step the pipeline's schedulers. Each layer is read at the end of training: the mean
``near_zero`` over the last 10% of steps.

fastai plots the curves and leaves the reading to you. A fixed reading ("a layer above
X% near zero") does not hold here: ``near_zero`` counts pre-activations, so a layer of a
healthy net sits at 0.35-0.67 (calibration pipelines, clean seeds 0-1, all layers with
parameters but the output head) and a head whose outputs are legitimately negative sits
near 1 (vae's log-variance head: 0.95-0.99), while the bugs that shift it end at
0.40-0.92 (seed 0: sequence view_instead_of_permute 0.92 on the GRU, flip_pairs
normalized_twice 0.81; digits extreme_weight_decay 0.42, finetune normalized_twice
0.40). So the rule reads each layer against the same pipeline's clean runs, as a user
compares a plot with one from a run they trust: the clean pipeline at seeds 1000-1004
(``clean_reference``, cached per pipeline). A run is flagged when some layer's share
rises above the reference maximum by more than ``margin = max(MIN_MARGIN, max - min of
the five reference shares)``, or falls below the reference minimum by as much (a
layer whose activations all turned positive is as far from its clean plot). Layers are
matched by position and type; a layer the reference does not have is not compared.

Calibration (clean seeds 0-4 of the 10 calibration pipelines, each against its own
1000-1004 reference): the largest excursion of a clean run beyond its reference range is
0.060 (imbalanced seed 0, first Linear layer below its range; then 0.051 on digits' second
convolution), so ``MIN_MARGIN = 0.10`` (1.7x, the margin lr_find's rule leaves): 0 of 50
clean calibration runs flagged (with 0.05: 2). Catalog bugs at seed 0 on calibration
pipelines move a layer by 0.36 (sequence view_instead_of_permute, GRU 0.92 against
0.50-0.56), 0.32 (digits frozen_parameters and clipped_loss_not_gradients@high),
0.26 (digits missing_zero_grad), 0.24 (digits overconfident_output_init), 0.17
(regression wrong_normalization_mean), 0.16 (sequence detached_features), 0.12 (finetune
pretrained_weights_reinitialized), 0.11 (flip_pairs normalized_twice), and by less than
the margin: charlm missing_causal_mask 0.094, digits normalized_twice 0.082, imbalanced
normalized_twice 0.065, digits extreme_weight_decay 0.008, vae normalized_twice 0.014.

Cost: one extra training of the pipeline per checked run (median 0.65 s per run on the
zoo, reports/peers; all recipe detectors together: 0.63 s), plus five once per pipeline
for the reference.
"""
from __future__ import annotations

import numpy as np
import torch

from recipebench.detectors.base import Detector, Outcome, Verdict, register_detector
from recipebench.detectors.peers import clean_reference, outside_clean_range

TAIL = 0.1  # share of the last steps read as "the end of training"
INSTALL = ("pip install --no-deps fastai==2.8.12 fastcore==2.2.39 fasttransform==0.0.5 fastprogress==1.0.3 "
           "fastdownload==0.0.8 plum-dispatch==2.9.0 beartype==0.23.1 && pip install rich")


def near_zero_at_end(s) -> dict[str, float]:
    """Layer -> fastai's ``near_zero`` averaged over the last ``TAIL`` of the pipeline's
    training steps. fastai records the forwards of training batches (its Learner's
    ``training`` flag, whatever mode the model is in); here: forwards with gradients
    enabled, as the harness evaluates (a plateau scheduler's validation loss) under
    ``no_grad``. A layer is named
    by its position among fastai's hooked modules and its type, ``"3:Linear"``, as
    fastai's ``layer_stats(idx)`` indexes them: a bug that wraps the model (a softmax
    appended) renames its modules but keeps their order."""
    from fastai.callback.hook import ActivationStats, flatten_model, has_params

    model = s.fresh_model()
    stats = ActivationStats()  # fastai's callback; only its hook function is called
    layers = [m for m in flatten_model(model) if has_params(m)]
    names = {id(m): f"{i}:{type(m).__name__}" for i, m in enumerate(layers)}
    latest: dict[str, float] = {}

    def hook(module, inputs, output):
        if torch.is_grad_enabled():  # a training forward; evaluations run under no_grad
            res = stats.hook(module, inputs, output)
            res = res[0] if isinstance(res, list) else res  # an RNN: its output sequence
            latest[names[id(module)]] = res["near_zero"]

    per_step: list[dict] = []

    def after_step(losses) -> bool:  # s.train's per-step callback; never stops the run
        per_step.append(dict(latest))
        return False

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        s.train(model, s.pipeline.steps, s.batches(), stop=after_step)
    finally:
        for h in handles:
            h.remove()
    tail = per_step[int(len(per_step) * (1 - TAIL)):] or per_step
    return {name: float(np.mean([step[name] for step in tail if name in step]))
            for name in sorted({n for step in tail for n in step})}


@register_detector
class FastaiActivationStats(Detector):
    """fastai's ActivationStats against the pipeline's clean reference; the rule and its
    calibration are in the module docstring."""

    name = "activation_stats"
    description = "fastai ActivationStats: a layer's share of near-zero activations leaves its clean range"
    recipe_step = "peer tool: fastai ActivationStats (activation statistics per layer)"
    stage, kind, cost = "peers", "active", 2
    peer = True
    min_timeout = 600.0  # the first cell of a pipeline also trains five clean reference seeds
    example_bug = "view_instead_of_permute"
    MIN_MARGIN = 0.10

    def check(self, s):
        try:
            import fastai.callback.hook  # noqa: F401
        except ImportError:
            return Verdict(Outcome.ERROR, evidence={"message": f"fastai is not installed: {INSTALL}"})
        from importlib.metadata import version

        ref = clean_reference("activation_stats", s, near_zero_at_end, version("fastai"))
        run = near_zero_at_end(s)
        excess, limits = {}, {}
        for name, share in run.items():
            clean = [r[name] for r in ref.values() if name in r]
            if not clean:
                continue
            excess[name], margin = outside_clean_range(share, clean, self.MIN_MARGIN)
            limits[name] = {"near_zero": round(share, 4), "clean_min": round(min(clean), 4),
                            "clean_max": round(max(clean), 4), "margin": round(margin, 4)}
        if not excess:
            return Verdict(Outcome.NOT_APPLICABLE, evidence={"reason": "no layer with parameters in common with the "
                                                                        "clean reference"})
        worst = max(excess, key=excess.get)
        return self.decide(excess[worst] > 1, excess[worst], steps=s.pipeline.steps, worst_layer=worst,
                           flagged_layers=sorted(n for n, e in excess.items() if e > 1), layers=limits)
