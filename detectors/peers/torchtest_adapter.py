"""torchtest (PyPI ``torchtest`` 0.5, Suraj Srinivas and contributors, 2019; MIT;
https://github.com/suriyadeepan/torchtest): "a tiny test suite for PyTorch", a port of
Chase Roberts' mltest (https://medium.com/@keeper6928/mltest-automatically-test-neural-
network-models-in-one-function-call-eb6f1fa5019d). Its metadata pins nothing newer than
the torch of 2019; it is one module of plain torch calls and runs on torch 2.x
(``pip install --no-deps torchtest==0.5``).

What runs: torchtest's own ``test_suite`` with ``test_vars_change=True`` (its
``assert_vars_change``: one training step, every parameter with ``requires_grad`` must
change), ``test_nan_vals=True`` and ``test_inf_vals=True`` (on the model's output after
that step, in eval mode) and ``test_output_range=True`` with an ``output_range``, on

* the pipeline's own fresh model (``s.fresh_model()``),
* its optimizer from the ``optimizer`` seam over the parameters that require gradients
  (as the harness's training loop builds it),
* one real batch: the first of ``s.batches()`` (the pipeline's loader, order and
  augmentation),
* its ``loss`` seam as torchtest's ``loss_fn(model(inputs), targets)``.

torchtest runs its own step (``zero_grad``, forward, ``loss.backward()``, ``step``): the
pipeline's ``train_step`` (gradient clipping, accumulation) is not used. A pipeline whose
``step_loss`` is not the ``loss`` seam on the model's output (a model called on more
than its input, a loss over internals), or whose input or output is not one tensor,
cannot be written as torchtest's ``(model, loss_fn, batch)``: ``not_applicable``.

How the output is read: torchtest raises ``VariablesChangeException`` ("<name> did not
change!"), ``RangeException``, ``NaNTensorException`` or ``InfTensorException``; any of
them flags the run (score 1), with the message as evidence. torchtest's default output
range (-1, 1) is for tanh-like outputs and would flag every classifier's logits; a user
sets the range to what their model should emit. Here it is what the *clean* pipeline
emits: the min and max of the clean model's output after torchtest's step on its own
first batch at the reference seeds (``clean_reference``), widened by ``RANGE_WIDEN``
times that span on each side. Two quirks of torchtest 0.5 are kept as they are, since
they are the tool: ``assert_never_inf`` raises only when *every* output is non-finite
(``isfinite(t).any()``), and parameters with ``requires_grad=False`` are not checked
(a frozen layer passes the "changes" test by construction).
"""
from __future__ import annotations

import torch

from recipebench.detectors.base import Detector, Outcome, Verdict, register_detector
from recipebench.detectors.peers import clean_reference
from recipebench.harness.pipeline import output_loss
from recipebench.harness.subject import Unreadable, input_tensor

INSTALL = "pip install --no-deps torchtest==0.5"
RANGE_WIDEN = 1.0  # the allowed range: the clean outputs' [min, max] widened by this many spans each side


def _setup(s):
    """The pipeline's model, optimizer and first batch as torchtest takes them."""
    if s.pipeline.step_loss is not output_loss:
        raise Unreadable("the pipeline's step_loss is not its loss seam on the model's output")
    model = s.fresh_model()
    x, y = next(iter(s.batches()))
    batch = [input_tensor(x), input_tensor(y, "the target")]
    opt = s.pipeline.optimizer([(n, q) for n, q in model.named_parameters() if q.requires_grad], s.pipeline.lr)
    if isinstance(opt, (list, tuple)):
        raise Unreadable("the pipeline builds several optimizers; torchtest steps one")
    return model, opt, batch


def clean_output_range(s) -> list[float]:
    """[min, max] of the model's output after torchtest's training step (its own
    ``_train_step`` then ``_forward_step``), for the reference."""
    from torchtest import torchtest as tt

    model, opt, batch = _setup(s)
    tt._train_step(model, s.pipeline.loss, opt, batch, "cpu")
    out = input_tensor(tt._forward_step(model, batch, "cpu"), "the model's output").float()
    return [float(out.min()), float(out.max())]


@register_detector
class Torchtest(Detector):
    name = "torchtest"
    description = "torchtest's test_suite: variables change, output range, NaN and Inf on one real batch"
    recipe_step = "peer tool: torchtest (unit tests of one training step)"
    stage, kind, cost = "peers", "active", 2
    peer = True
    needs_reference = True
    min_timeout = 120.0  # the first cell of a pipeline also runs five clean reference steps
    example_bug = "detached_features"

    def check(self, s):
        try:
            from torchtest import torchtest as tt
        except ImportError:
            return Verdict(Outcome.ERROR, evidence={"message": f"torchtest is not installed: {INSTALL}"})
        try:
            model, opt, batch = _setup(s)
            ref = clean_reference("torchtest", s, clean_output_range, "0.5", RANGE_WIDEN)
        except Unreadable as exc:
            return Verdict(Outcome.NOT_APPLICABLE, evidence={"reason": str(exc)})
        lo, hi = min(r[0] for r in ref.values()), max(r[1] for r in ref.values())
        span = max(hi - lo, 1e-6)
        output_range = (lo - RANGE_WIDEN * span, hi + RANGE_WIDEN * span)
        findings = (tt.VariablesChangeException, tt.RangeException, tt.NaNTensorException, tt.InfTensorException)
        try:
            tt.test_suite(model, s.pipeline.loss, opt, batch, output_range=output_range, test_output_range=True,
                          test_vars_change=True, test_nan_vals=True, test_inf_vals=True, device="cpu")
        except findings as exc:
            return self.decide(True, 1.0, steps=1, torchtest_error=f"{type(exc).__name__}: {exc}",
                               output_range=[round(v, 4) for v in output_range])
        except Unreadable as exc:  # pragma: no cover - _setup already read the batch
            return Verdict(Outcome.NOT_APPLICABLE, evidence={"reason": str(exc)})
        with torch.no_grad():
            model.eval()
            out = s.pipeline.forward(model, batch[0])
        return self.decide(False, 0.0, steps=1, output_range=[round(v, 4) for v in output_range],
                           output_min=float(out.min()), output_max=float(out.max()))
