"""Trace once, detect many: the training loop and the instrumented run shared by
passive detectors.

The harness owns the loop (:func:`train`: data loader -> ``train_step`` -> schedulers
at their interval) and observes it at the point of truth, so a bug that replaces
``train_step`` is still seen as it acts: an optimizer step pre-hook records the
gradients and the learning rate the optimizer actually used (clipping after
``step()`` shows as unclipped), a forward pre-hook sees exactly what goes into the
net ("visualize just before the net"), a forward hook and a tensor hook see each
example's output gradient, and parameter snapshots give update norms.
"""
from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from recipebench.harness.pipeline import Dataset, Normalizer, Pipeline, Scheduled, Splits, StepContext, evaluating

INPUT_STAT_BATCHES = 8  # batches whose input statistics are recorded
PRED_EVERY = 10  # steps between snapshots of predictions on the fixed batch
FIXED_BATCH = 64  # size of the fixed validation batch whose predictions are tracked
CURVE_EVERY, CURVE_N = 100, 256  # eval-mode loss on a fixed training subset every 100 steps
SAMPLE_EVERY = 4  # steps between the costlier per-step records: update norms, output gradients


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


@dataclass(frozen=True)
class Prepared:
    """Every split as the net sees it: tensors after the pipeline's normalization."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    normalizer: Normalizer | None


@lru_cache(maxsize=64)
def prepared_splits(p: Pipeline):
    """Load, split, then the preparation fitted on the training split (``prepare_splits``)."""
    return p.prepare_splits(p.split(p.load_data()))


@lru_cache(maxsize=64)
def prepare(p: Pipeline) -> Prepared:
    """Load, split, prepare and normalize once per (pipeline, variant) in a process."""
    splits = prepared_splits(p)
    t = lambda d: (torch.as_tensor(d.x), torch.as_tensor(d.y))  # noqa: E731  dtypes as loaded
    (xtr, ytr), (xva, yva), (xte, yte) = t(splits.train), t(splits.val), t(splits.test)
    norm = None
    if "normalization" in p.capabilities:
        norm = p.fit_normalizer(xtr)
        xtr, xva, xte = (p.normalize(x, norm) for x in (xtr, xva, xte))
    return Prepared(xtr, ytr, xva, yva, xte, yte, norm)


def steps_per_epoch(p: Pipeline, prep: Prepared) -> int:
    """Batches in one epoch of the pipeline's loader (its ``len``)."""
    try:
        return max(1, len(p.loader(p, prep.x_train, prep.y_train, torch.Generator())))
    except TypeError:  # a loader without a length: whole batches of the training split
        return max(1, len(prep.y_train) // p.batch_size)


def batches(p: Pipeline, prep: Prepared, seed: int, augment: bool = True,
            x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> Iterator[tuple]:
    """The exact (x, y) batches that go into the net: the pipeline's loader epoch
    after epoch (``epoch_start`` before each), each batch ``unpack``ed into input and
    target (of any structure), then the batch augmentation. One generator, seeded
    with ``seed``, drives the order and the augmentation. A subset ``x, y`` is batched
    by the pipeline's own loader with ``batch_size`` at most its size."""
    if x is not None:  # a subset (a detector's probe): no batch larger than the subset, so none is dropped
        p = p.replace(batch_size=min(p.batch_size, len(x)))
    x = prep.x_train if x is None else x
    y = prep.y_train if y is None else y
    gen = torch.Generator().manual_seed(seed)
    loader = p.loader(p, x, y, gen)
    for epoch in itertools.count():
        p.epoch_start(loader, epoch)
        empty = True
        for batch in loader:
            empty = False
            xb, yb = p.unpack(batch)
            yield p.augment(xb, yb, gen) if augment else (xb, yb)
        if empty:
            return


def as_list(value) -> list:
    """``None``, one item or a list/tuple of them, as a list (seams may return any)."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def schedulers(p: Pipeline, opt, steps: int, spe: int) -> list[Scheduled]:
    """The ``scheduler`` seam's schedulers, checked to be :class:`Scheduled`."""
    scheds = as_list(p.scheduler(opt, steps, spe))
    for s in scheds:
        if not isinstance(s, Scheduled):
            raise TypeError(f"the scheduler seam returned {type(s).__name__}; wrap it as Scheduled(scheduler, interval)")
    return scheds


class OuterStep:
    """Step pre/post hooks that fire once per ``optimizer.step()`` as the script calls it.
    torch wraps ``step`` of every optimizer class it instantiates with the hooks, so a
    subclass whose ``step`` calls ``super().step()`` runs them twice (once per class)
    when its parent class has been instantiated too; the nested pair is skipped."""

    def __init__(self, optimizer, before=None, after=None):
        self.depth = 0
        self.before, self.after = before, after
        self.handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    def _pre(self, optimizer, args, kwargs):
        self.depth += 1
        if self.depth == 1 and self.before is not None:
            self.before(optimizer)

    def _post(self, optimizer, args, kwargs):
        self.depth -= 1
        if self.depth == 0 and self.after is not None:
            self.after(optimizer)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class StepCounter:
    """Counts each optimizer's ``step()`` calls (:class:`OuterStep`): the loop steps a
    scheduler with interval "step" once per step of the optimizer it was built on, so
    a script that accumulates gradients over several batches is scheduled as it is
    written."""

    def __init__(self, optimizers: list):
        self.counts = {id(o): 0 for o in optimizers}
        self.hooks = [OuterStep(o, after=self._count) for o in optimizers]

    def _count(self, optimizer):
        self.counts[id(optimizer)] += 1

    def of(self, optimizer) -> int:
        return self.counts.get(id(optimizer), 0)

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


def step_schedulers(scheds: list[Scheduled], ctx: StepContext, losses: list[float], stepped: Callable,
                    monitored: dict[str, Callable[[], float]], first_optimizer=None) -> None:
    """After a training step: step every scheduler whose interval ends here, as
    Lightning does ("step": once per step its optimizer took in this call; "epoch":
    after the epoch's last batch), giving a ReduceLROnPlateau its monitored value.
    ``stepped(optimizer)`` is how many steps that optimizer took in this call (a
    scheduler that names no optimizer follows the first)."""
    for s in scheds:
        if s.interval == "epoch":
            times = int(ctx.batch_idx == ctx.steps_per_epoch - 1)
        else:
            times = stepped(getattr(s.scheduler, "optimizer", first_optimizer))
        for _ in range(times):
            if s.monitor is None:
                s.scheduler.step()
            elif s.monitor == "train_loss":
                s.scheduler.step(float(np.mean(losses[-(1 if s.interval == "step" else ctx.steps_per_epoch):])))
            elif s.monitor not in monitored:
                raise ValueError(f"a scheduler monitors {s.monitor}, but this training has no validation split")
            else:
                s.scheduler.step(monitored[s.monitor]())


def eval_loss(p: Pipeline, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The pipeline's loss in eval mode on (x, y), e.g. the validation split."""
    with evaluating(model), torch.no_grad():
        return float(p.step_loss(p, model, x, y))


class Loop:
    """One training as the harness runs it: the optimizers and schedulers the seams
    build (schedulers sized for ``horizon`` batches, default ``steps``: a truncated
    rerun of a longer training passes its length), the :class:`StepContext`, and
    :meth:`batch`, one ``train_step`` call per loader batch followed by the schedulers
    whose interval ends there: "step" once per step of its own optimizer in this call
    (:class:`StepCounter`), "epoch" after the epoch's last batch, ReduceLROnPlateau with
    its ``monitor``ed value (from ``monitored``: "val_loss", "val_metric")."""

    def __init__(self, p: Pipeline, model: nn.Module, steps: int, spe: int, recorder: "Recorder | None" = None,
                 monitored: dict[str, Callable[[], float]] | None = None, horizon: int | None = None):
        self.p, self.model, self.recorder, self.monitored = p, model, recorder, monitored or {}
        self.optimizer = p.optimizer([(n, q) for n, q in model.named_parameters() if q.requires_grad], p.lr)
        self.optimizers = as_list(self.optimizer)
        self.schedulers = schedulers(p, self.optimizer, steps if horizon is None else horizon, spe)
        if recorder:
            recorder.watch(self.optimizers)
        self.counter = StepCounter(self.optimizers)
        self.ctx = StepContext(steps=steps, steps_per_epoch=spe)
        self.losses: list[float] = []
        model.train()

    def batch(self, step: int, x, y) -> float:
        """Train on one loader batch (the ``step``-th); returns its loss."""
        first = self.optimizers[0] if self.optimizers else None
        ctx = self.ctx.at(step, self.counter.of(first) if first is not None else 0)
        before = dict(self.counter.counts)
        if self.recorder:
            self.recorder.before_step(step, y)
        loss = float(self.p.train_step(self.p, self.model, self.optimizer, x, y, ctx).detach())
        self.losses.append(loss)
        if self.recorder:
            self.recorder.after_step(step, loss)
        stepped = lambda o: self.counter.of(o) - before.get(id(o), 0)  # noqa: E731  steps taken in this call
        step_schedulers(self.schedulers, ctx, self.losses, stepped, self.monitored, first)
        return loss

    def close(self) -> None:
        self.counter.remove()


def train(p: Pipeline, model: nn.Module, data: Iterator[tuple], steps: int, spe: int,
          recorder: "Recorder | None" = None, stop=None, monitored: dict[str, Callable[[], float]] | None = None,
          horizon: int | None = None) -> list[float]:
    """The training loop (:class:`Loop`), for ``steps`` loader batches (``train_step``
    calls) or until ``stop(losses)`` is true; returns the losses."""
    loop = Loop(p, model, steps, spe, recorder, monitored, horizon)
    try:
        for step, (x, y) in zip(range(steps), data):
            loop.batch(step, x, y)
            if stop is not None and stop(loop.losses):
                break
    finally:
        loop.close()
    return loop.losses


@dataclass
class Trace:
    """What one instrumented run recorded (plain data; cached and shared by detectors).

    ``loss`` and ``train_mode`` are per ``train_step`` call (loader batch); ``lr``,
    ``grad_norm`` and ``update_norm`` per **optimizer step**, ``step_calls`` giving the
    call in which each step of the first optimizer happened (``range(n)`` when every
    call steps once)."""

    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)  # per optimizer step: the first param group's LR as it stepped
    step_calls: list = field(default_factory=list)  # per optimizer step: the train_step call it happened in
    grad_norm: dict = field(default_factory=dict)  # param name -> per-optimizer-step norms
    sample_steps: list = field(default_factory=list)  # optimizer steps (every SAMPLE_EVERY) with update norms
    update_norm: dict = field(default_factory=dict)  # param name -> norms at sample_steps
    param_norm: dict = field(default_factory=dict)  # param name -> norm at init
    param_norm_final: dict = field(default_factory=dict)  # param name -> norm after training
    input_mean: list = field(default_factory=list)  # per batch, per channel
    input_std: list = field(default_factory=list)
    train_mode: list = field(default_factory=list)  # model.training at each training forward pass
    wrong_steps: list = field(default_factory=list)  # calls (every SAMPLE_EVERY) whose output gradient is read
    wrong: list = field(default_factory=list)  # misclassified examples at each of wrong_steps
    wrong_zero_grad: list = field(default_factory=list)  # ... whose output gradient is 0
    curve_steps: list = field(default_factory=list)  # calls completed at each subset-loss snapshot
    train_subset_loss: list = field(default_factory=list)  # eval-mode loss on the first 256 training examples
    pred_steps: list = field(default_factory=list)
    preds: list = field(default_factory=list)  # argmax on the fixed batch at pred_steps (classification)
    first_layer_change: float = float("nan")  # ||W_end - W_init|| / ||W_init|| of the first weight matrix
    first_layer: list | None = None  # final first-layer conv filters (out, in, k, k), when they are small
    dead_units: float = float("nan")  # share of ReLU units silent on the whole fixed batch after training
    metric: float = float("nan")  # the true metric: the harness's evaluation on trusted test labels
    reported_metric: float = float("nan")  # what the pipeline's own evaluate says
    seconds: float = 0.0
    warnings: list = field(default_factory=list)
    error: str | None = None

    @property
    def silent(self) -> bool:
        return self.error is None and not self.warnings

    def step_loss(self) -> np.ndarray:
        """Mean training loss of the calls each optimizer step closed (its
        accumulation window): aligned with ``lr`` and ``grad_norm``."""
        loss, ends = np.asarray(self.loss, dtype=float), np.asarray(self.step_calls, dtype=int) + 1
        if len(ends) == len(loss) and (len(ends) == 0 or ends[-1] == len(loss)):
            return loss  # one step per call
        starts = np.concatenate([[0], ends[:-1]])
        return np.array([loss[a:b].mean() if b > a else np.nan for a, b in zip(starts, ends)])

    def step_epochs(self, steps_per_epoch: int) -> np.ndarray:
        """The epoch of each optimizer step (``steps_per_epoch`` counts loader batches)."""
        return np.asarray(self.step_calls, dtype=int) // max(1, steps_per_epoch)


def first_float_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The first floating-point tensor among a call's arguments (the input a model
    receives, whatever the batch's structure), or None (token ids only)."""
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v
    return None


class Recorder:
    """Hooks that fill a :class:`Trace` during :func:`train`.

    At the point of truth, **per optimizer step**: a step pre-hook on every optimizer
    records the gradient norms of the parameters it is about to update and (first
    optimizer) the learning rate of its first param group and the call it steps in;
    every ``SAMPLE_EVERY``-th step of an optimizer the pre-hook also copies its
    parameters and its post-hook records the update norms. A training call that steps
    no optimizer (a micro-batch under gradient accumulation) records only its loss.
    Per call: loss, train/eval mode (forward pre-hook, which also records the input's
    statistics), and every ``SAMPLE_EVERY`` calls the output gradient of the fixed
    classification head. A traced run stays within 1.2x of the bare loop. Per-step
    norms go into a preallocated tensor and become lists once, at the end.
    """

    def __init__(self, model: nn.Module, trace: Trace, fixed_x: torch.Tensor, classify: bool,
                 p: Pipeline | None = None, prep: Prepared | None = None, steps: int = 0):
        self.model, self.trace, self.fixed_x, self.classify = model, trace, fixed_x, classify
        self.p = p
        self.subset = (prep.x_train[:CURVE_N], prep.y_train[:CURVE_N]) if prep is not None else None
        self.params = [(n, q) for n, q in model.named_parameters()]
        self._tensors = [q.detach() for _, q in self.params]
        self._grad_norms = torch.zeros(max(steps, 1), len(self.params))
        self._update_norms = torch.zeros(max(steps, 1) // SAMPLE_EVERY + 1, len(self.params))
        for n, q in self.params:
            trace.param_norm[n] = float(q.detach().norm())
        self._y = self._out = self._out_grad = None
        self._active = self._sampled = False
        self._call = 0
        self._optimizers: list[dict] = []
        model.register_forward_pre_hook(self._on_input, with_kwargs=True)
        model.register_forward_hook(self._on_output)

    def watch(self, optimizers: list) -> None:
        """Hook every optimizer of the run (a GAN has two)."""
        column = {id(q): j for j, (_, q) in enumerate(self.params)}
        for i, opt in enumerate(optimizers):
            owned = [(column[id(q)], q) for g in opt.param_groups for q in g["params"] if id(q) in column]
            state = dict(first=i == 0, cols=torch.tensor([c for c, _ in owned], dtype=torch.long),
                         params=[q for _, q in owned], steps=0, before=None)
            self._optimizers.append(state)
            OuterStep(opt, self._before_optimizer_step(state), self._after_optimizer_step(state))

    def _before_optimizer_step(self, st: dict):
        zero = torch.zeros(())

        def hook(optimizer):
            if not self._active:
                return
            k = st["steps"]
            if st["first"]:
                self.trace.lr.append(float(optimizer.param_groups[0]["lr"]))
                self.trace.step_calls.append(self._call)
            if k < len(self._grad_norms) and st["params"]:
                norms = torch._foreach_norm([q.grad if q.grad is not None else zero for q in st["params"]])
                self._grad_norms[k, st["cols"]] = torch.stack(norms)
            if k % SAMPLE_EVERY == 0 and k // SAMPLE_EVERY < len(self._update_norms) and st["params"]:
                st["before"] = torch._foreach_mul([q.detach() for q in st["params"]], 1.0)  # one fused copy
        return hook

    def _after_optimizer_step(self, st: dict):
        def hook(optimizer):
            if not self._active:
                return
            k = st["steps"]
            st["steps"] += 1
            if st["before"] is not None:
                moved = torch._foreach_sub([q.detach() for q in st["params"]], st["before"])
                self._update_norms[k // SAMPLE_EVERY, st["cols"]] = torch.stack(torch._foreach_norm(moved))
                st["before"] = None
            if st["first"] and k % SAMPLE_EVERY == 0 and k // SAMPLE_EVERY < len(self._update_norms):
                self.trace.sample_steps.append(k)
        return hook

    def _on_input(self, module, args, kwargs):
        if not self._active:
            return
        self.trace.train_mode.append(module.training)
        x = first_float_tensor(args, kwargs)
        if x is not None and x.dim() >= 2 and len(self.trace.input_mean) < INPUT_STAT_BATCHES:
            x = x.detach()
            dims = [d for d in range(x.dim()) if d != 1]
            self.trace.input_mean.append(x.mean(dim=dims).tolist())
            self.trace.input_std.append(x.std(dim=dims).tolist())

    def _on_output(self, module, args, out):
        if self._sampled and isinstance(out, torch.Tensor) and out.requires_grad and self._out is None:
            self._out = out.detach()
            out.register_hook(self._on_out_grad)

    def _on_out_grad(self, grad):
        self._out_grad = grad.detach()

    def before_step(self, call: int, y):
        self._call, self._y, self._out, self._out_grad, self._active = call, y, None, None, True
        self._sampled = self.classify and call % SAMPLE_EVERY == 0

    def after_step(self, step: int, loss: float):
        self._active = False
        t = self.trace
        t.loss.append(loss)
        if self._sampled:
            self._sampled = False
            y = self._y
            if self._out is not None and self._out.dim() == 2 and isinstance(y, torch.Tensor) and len(y) == len(self._out):
                wrong = self._out.argmax(-1) != y
                t.wrong_steps.append(step)
                t.wrong.append(int(wrong.sum()))
                dead = self._out_grad.abs().sum(-1) == 0 if self._out_grad is not None else torch.ones_like(wrong)
                t.wrong_zero_grad.append(int((wrong & dead).sum()))
        if self.subset is not None and (step + 1) % CURVE_EVERY == 0:
            with evaluating(self.model), torch.no_grad():
                t.curve_steps.append(step + 1)
                t.train_subset_loss.append(float(self.p.step_loss(self.p, self.model, *self.subset)))
        if self.classify and step % PRED_EVERY == 0:
            with evaluating(self.model), torch.no_grad():
                t.pred_steps.append(step)
                t.preds.append(self.p.forward(self.model, self.fixed_x).argmax(-1).tolist())

    def finish(self) -> None:
        """Move the per-step norms into the trace as plain lists (one conversion)."""
        t = self.trace
        grads = self._grad_norms[:max((st["steps"] for st in self._optimizers), default=0)].T.tolist()
        updates = self._update_norms[:len(t.sample_steps)].T.tolist()
        for (n, _), g, u in zip(self.params, grads, updates):
            t.grad_norm[n], t.update_norm[n] = g, u


@torch.no_grad()
def dead_unit_fraction(model: nn.Module, x: torch.Tensor, forward: Callable = nn.Module.__call__) -> float:
    """Share of ReLU units (channels or features) that output 0 for every example of ``x``."""
    dead, total = [0], [0]

    def count(module, args, out):
        per_unit = out.transpose(0, 1).reshape(out.shape[1], -1) if out.dim() > 1 else out[None]  # (units, rest)
        dead[0] += int((per_unit.abs().amax(dim=1) == 0).sum())
        total[0] += per_unit.shape[0]

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with evaluating(model):
            forward(model, x)
    finally:
        for h in hooks:
            h.remove()
    return dead[0] / total[0] if total[0] else 0.0


@lru_cache(maxsize=64)
def trusted_test_split(clean: Pipeline, p: Pipeline):
    """The clean test split, its labels as the clean pipeline prepares them (trusted)
    and its inputs as the run ``p`` prepares them: ``p``'s preparation fitted on ``p``'s
    own training split (a vocabulary or scaler is part of the model as deployed, even
    when a bug changed the split it was fitted on), applied to the clean test inputs."""
    clean_raw = clean.split(clean.load_data())
    labels = clean.prepare_splits(clean_raw).test
    run_raw = clean_raw if p.split is clean.split and p.load_data is clean.load_data else p.split(p.load_data())
    inputs = p.prepare_splits(Splits(run_raw.train, run_raw.val, clean_raw.test)).test
    return Dataset(inputs.x, labels.y)


def true_metric(clean: Pipeline, p: Pipeline, prep: Prepared, model: nn.Module) -> float:
    """The harness's metric: the clean pipeline's ``evaluate`` on the clean test
    split's inputs and labels, the inputs sent through the run's own preparation and
    normalization (part of the model as deployed). A bug in the labels, the split or
    ``evaluate`` cannot move it; a bug in what the model learned does."""
    test = trusted_test_split(clean, p)
    x = torch.as_tensor(test.x)
    if "normalization" in p.capabilities and prep.normalizer is not None:
        x = p.normalize(x, prep.normalizer)
    return float(clean.evaluate(model, x, torch.as_tensor(test.y)))


def monitored_values(p: Pipeline, model: nn.Module, prep: Prepared) -> dict[str, Callable[[], float]]:
    """What a ReduceLROnPlateau is given: "val_loss", the eval-mode loss on the first
    512 validation examples; "val_metric", the pipeline's ``evaluate`` on them."""
    x, y = prep.x_val[:512], prep.y_val[:512]
    return {"val_loss": lambda: eval_loss(p, model, x, y), "val_metric": lambda: float(p.evaluate(model, x, y))}


def record(p: Pipeline, seed: int, clean: Pipeline | None = None) -> Trace:
    """Run the pipeline once with instrumentation; exceptions and warnings are
    recorded. ``clean`` is the unmutated pipeline whose test split and ``evaluate``
    give the true metric (None: ``p`` is the clean pipeline itself)."""
    trace = Trace()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            prep = prepare(p)
            seed_everything(seed)
            model = p.build_model(p)
            rec = Recorder(model, trace, prep.x_val[:FIXED_BATCH], "classification" in p.capabilities, p, prep, p.steps)
            first = next((q for q in model.parameters() if q.dim() >= 2), None)
            first_init = None if first is None else first.detach().clone()
            try:
                train(p, model, batches(p, prep, seed), p.steps, steps_per_epoch(p, prep), rec,
                      monitored=monitored_values(p, model, prep))
            finally:
                rec.finish()
            if first is not None:
                trace.first_layer_change = float((first.detach() - first_init).norm() / first_init.norm())
                if first.dim() == 4 and first.numel() <= 1024:  # conv filters worth looking at
                    trace.first_layer = first.detach().round(decimals=4).tolist()
            trace.dead_units = dead_unit_fraction(model, prep.x_val[:FIXED_BATCH], p.forward)
            trace.param_norm_final = {n: float(q.detach().norm()) for n, q in model.named_parameters()}
            trace.reported_metric = float(p.evaluate(model, prep.x_test, prep.y_test))
            trace.metric = trace.reported_metric if clean is None else true_metric(clean, p, prep, model)
        except Exception as exc:
            trace.error = f"{type(exc).__name__}: {exc}"
    trace.warnings = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    trace.seconds = time.perf_counter() - start
    return trace
