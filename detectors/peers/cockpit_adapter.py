"""Cockpit (PyPI ``cockpit-for-pytorch`` 1.0.2 on ``backpack-for-pytorch`` 1.7.1, MIT;
Schneider, Dangel and Hennig, "Cockpit: A Practical Debugging Tool for the Training of
Deep Neural Networks", NeurIPS 2021, https://cockpit.readthedocs.io): instruments that
read a training run's loss landscape and gradient noise from BackPACK's individual
gradients.

Install: backpack's metadata pulls torchvision and cockpit's pulls seaborn for its
plots, so ``pip install --no-deps cockpit-for-pytorch==1.0.2 backpack-for-pytorch==1.7.1``
then ``pip install --no-deps einops==0.8.2 unfoldNd==0.2.3 json-tricks==3.17.3
seaborn==0.13.2`` (numpy, scipy, pandas and matplotlib are already there). One bridge:
``cockpit/__init__.py`` does ``from pkg_resources import get_distribution`` (for its
``__version__``), and setuptools >= 81 no longer ships ``pkg_resources``; when it is
missing the adapter registers a two-name stand-in (``get_distribution`` and
``DistributionNotFound`` over ``importlib.metadata``) before importing cockpit.

What runs: Cockpit's own quantities, as its README sets them up, on the pipeline's own
training (``s.train``: its optimizer, schedules, clipping and ``train_step``): the model
is ``backpack.extend``ed; each backward of the pipeline's loss runs inside
``with cockpit(step, info={batch_size, individual_losses, loss, optimizer})`` with
``create_graph=cockpit.create_graph(step)`` (the adapter gives the loss tensor that
``backward``). Individual losses are the pipeline's ``loss`` seam on each example's
output (a per-example mean, as Cockpit asks). Quantities, every ``EVERY`` steps:
``Alpha`` (the local effective step size: where the step lands on a 1-d quadratic fit
of the loss along the update, -1 = stays put, 0 = the minimum along the step, 1 = the
opposite side at the same height), ``NormTest``, ``InnerTest``, ``OrthoTest`` (the
gradient tests of Byrd et al. 2012 and Bollapragada et al. 2018) and ``HessMaxEV`` (the
Hessian's largest eigenvalue by power iteration on autograd Hessian-vector products).
Only models whose parametrized layers BackPACK's first-order extensions support
(``Linear``, ``Conv1d/2d/3d``) are checked; any other (a BatchNorm in training mode, an
RNN, an embedding, attention) is ``not_applicable``. The forward must be one tensor in,
one tensor out.

How it is read: the paper's gauges are plots the user compares with what a working run
looks like (section 3: alpha "in a good range" near 0, neither consistently
overshooting > 0 nor undershooting < 0; the gradient tests' statistics in the unit
ball meaning the mini-batch is "good enough"; the max eigenvalue telling how sharp the
region is); its case studies read them against a run known to work. So the rule reads
each gauge's summary over training against the same pipeline's clean runs at seeds
1000-1004 (``clean_reference``, cached per pipeline), as activation_stats does: the
median alpha, the median of log10 norm-test, inner-product-test and orthogonality-test
statistics, and the median of log10 HessMaxEV. A run is flagged when some summary lies
outside its clean range by more than ``margin = max(MIN_MARGIN[gauge], max - min of the
five clean values)`` (score: the largest such excursion, in margins).

Calibration (digits only, ``EVERY = 10``, 15 tracked steps; measured 2026-12-03): the
reference 1000-1004 spans alpha -0.31..0.12, log10 inner test -0.415..-0.330, log10
HessMaxEV 1.24..1.42. Clean seeds 0, 1, 2 leave it by at most 0.08 in alpha (0.19
margins) and 0.019 in a log gauge (0.12 margins), so ``MIN_MARGIN`` is 0.15 for the log
gauges (a factor 1.4) and 0.25 for alpha. Bugs at seed 0: extreme_weight_decay (inner
test -0.627: 1.41 margins), labels_misaligned (inner -0.623: 1.39; HessMaxEV 1.01: 1.29),
normalized_twice (inner -0.599: 1.23) are flagged, by little; clip_after_step stays in
range. Not calibrated on other pipelines. Where Cockpit itself raises on a buggy run
the cell is an error, not a finding: with missing_zero_grad, ``HessMaxEV`` reads
``.grad``, which then still holds earlier steps' graphs (``RuntimeError: one of the
variables needed for gradient computation has been modified by an inplace
operation``); with detached_features a parameter Cockpit is given never gets a
gradient (``AttributeError: 'NoneType' object has no attribute 'data'``); with
clipped_loss_not_gradients@high every gradient is zero (``ZeroDivisionError`` in a
gradient test).

Cost: one extra training of the pipeline with Cockpit per checked run, 2-4 s on digits
against 0.3-0.8 s bare (5-10x; the Hessian power iteration and per-example losses at
tracked steps), plus five once per pipeline for the reference.
"""
from __future__ import annotations

import importlib.metadata
import math
import sys
import types
import warnings

import numpy as np
import torch
from torch import nn

from recipebench.detectors.base import Detector, Outcome, Verdict, register_detector
from recipebench.detectors.peers import clean_reference, outside_clean_range
from recipebench.harness.subject import Unreadable

INSTALL = ("pip install --no-deps cockpit-for-pytorch==1.0.2 backpack-for-pytorch==1.7.1 einops==0.8.2 "
           "unfoldNd==0.2.3 json-tricks==3.17.3 seaborn==0.13.2")
EVERY = 10  # Cockpit's track schedule: schedules.linear(EVERY)
SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # parametrized layers checked
GAUGES = ("alpha", "log10_norm_test", "log10_inner_test", "log10_ortho_test", "log10_hess_max_ev")
MIN_MARGIN = {"alpha": 0.25, "log10_norm_test": 0.15, "log10_inner_test": 0.15, "log10_ortho_test": 0.15,
              "log10_hess_max_ev": 0.15}


def import_cockpit():
    """``cockpit`` (with the ``pkg_resources`` stand-in where setuptools lacks it)."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")

        class DistributionNotFound(Exception):
            pass

        def get_distribution(name):
            try:
                return types.SimpleNamespace(version=importlib.metadata.version(name))
            except importlib.metadata.PackageNotFoundError as exc:
                raise DistributionNotFound(name) from exc

        shim.DistributionNotFound, shim.get_distribution = DistributionNotFound, get_distribution
        sys.modules["pkg_resources"] = shim
        try:  # the stand-in serves cockpit's import only: others (pytest's monkeypatch) test for pkg_resources
            import cockpit
        finally:
            del sys.modules["pkg_resources"]
        return cockpit
    import cockpit

    return cockpit


def check_supported(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)) and not isinstance(module, SUPPORTED):
            raise Unreadable(f"layer {name or 'model'} ({type(module).__name__}) has parameters BackPACK's "
                             f"first-order extensions do not cover here")


def gauges(s) -> dict:
    """Cockpit's quantities over the pipeline's training, summarized per gauge."""
    import_cockpit()
    from backpack import extend
    from cockpit import Cockpit, quantities
    from cockpit.utils import schedules

    p = s.pipeline
    check_supported(s.fresh_model())
    schedule = schedules.linear(EVERY)
    qs = [quantities.Alpha(schedule), quantities.NormTest(schedule), quantities.InnerTest(schedule),
          quantities.OrthoTest(schedule), quantities.HessMaxEV(schedule)]
    state: dict = {"call": 0}
    built: dict = {}

    def build(pp):
        model = extend(p.build_model(pp))
        built["cockpit"] = Cockpit([q for q in model.parameters() if q.requires_grad], quantities=qs)
        return model

    def optimizer(named, lr):
        opt = p.optimizer(named, lr)
        state["optimizer"] = opt[0] if isinstance(opt, (list, tuple)) else opt
        return opt

    def forward(model, x):
        if not isinstance(x, torch.Tensor):
            raise Unreadable(f"the model's input is a {type(x).__name__}, not one tensor")
        out = p.forward(model, x)
        if not isinstance(out, torch.Tensor):
            raise Unreadable(f"the model's output is a {type(out).__name__}, not one tensor")
        state["output"] = out
        return out

    def step_loss(pp, model, x, y):
        loss = p.step_loss(pp, model, x, y)
        out, cp, step = state.pop("output"), built["cockpit"], state["call"]
        state["call"] += 1
        individual = torch.stack([p.loss(out[i:i + 1], y[i:i + 1]) for i in range(len(out))]) \
            if cp.create_graph(step) or any(q.should_compute(step) for q in cp.quantities) else None
        info = {"batch_size": len(out), "individual_losses": individual, "loss": loss,
                "optimizer": state["optimizer"]}

        def backward(*args, **kwargs):
            with cp(step, info=info):
                torch.Tensor.backward(loss, create_graph=cp.create_graph(step))

        loss.backward = backward
        return loss

    sub = type(s)(p.replace(build_model=build, optimizer=optimizer, forward=forward, step_loss=step_loss), s.seed)
    model = sub.fresh_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sub.train(model, p.steps, sub.batches())
    out = built["cockpit"].get_output()
    series = {q: [v[q] for _, v in sorted(out.items()) if q in v and v[q] is not None]
              for q in ("Alpha", "NormTest", "InnerTest", "OrthoTest", "HessMaxEV")}

    def med(values, log):
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v)) and (not log or float(v) > 0)]
        return float(np.median(np.log10(vals) if log else vals)) if vals else None

    return {"alpha": med(series["Alpha"], False), "log10_norm_test": med(series["NormTest"], True),
            "log10_inner_test": med(series["InnerTest"], True), "log10_ortho_test": med(series["OrthoTest"], True),
            "log10_hess_max_ev": med(series["HessMaxEV"], True), "tracked_steps": len(series["NormTest"])}


@register_detector
class CockpitGauges(Detector):
    name = "cockpit"
    description = "Cockpit's alpha, gradient tests and Hessian max eigenvalue leave the clean pipeline's range"
    recipe_step = "peer tool: Cockpit (BackPACK instruments of the training run)"
    stage, kind, cost = "peers", "active", 3
    peer = True
    needs_reference = True
    min_timeout = 600.0  # the first cell of a pipeline also trains five clean reference seeds
    example_bug = "extreme_weight_decay"

    def check(self, s):
        try:
            import_cockpit()
            import backpack  # noqa: F401
        except ImportError as exc:
            return Verdict(Outcome.ERROR, evidence={"message": f"cockpit is not installed ({exc}): {INSTALL}"})
        try:
            ref = clean_reference("cockpit", s, gauges, "1.0.2", "1.7.1", EVERY)
            run = gauges(s)
        except Unreadable as exc:
            return Verdict(Outcome.NOT_APPLICABLE, evidence={"reason": str(exc)})
        excess, limits = {}, {}
        for gauge in GAUGES:
            clean = [r[gauge] for r in ref.values() if r.get(gauge) is not None]
            if run.get(gauge) is None or not clean:
                continue
            excess[gauge], margin = outside_clean_range(run[gauge], clean, MIN_MARGIN[gauge])
            limits[gauge] = {"value": round(run[gauge], 4), "clean_min": round(min(clean), 4),
                             "clean_max": round(max(clean), 4), "margin": round(margin, 4)}
        if not excess:
            return Verdict(Outcome.NOT_APPLICABLE, evidence={"reason": "no gauge computed on both the run and the "
                                                                        "clean reference"})
        worst = max(excess, key=excess.get)
        return self.decide(excess[worst] > 1, excess[worst], steps=s.pipeline.steps, worst_gauge=worst,
                           flagged_gauges=sorted(g for g, e in excess.items() if e > 1), gauges=limits)
