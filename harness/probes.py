"""Symptom probes: the measurements that show a bug's defect, clean vs mutated.

Each bug names one probe as its ``symptom``; the harness computes every applicable
probe on every run, and the impact analysis tests bug vs clean on it (``latent``
when the primary metric holds but the probe moves). Detectors reuse the same
measurements, then apply a threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from recipebench.harness.pipeline import StepContext
from recipebench.harness.subject import Subject, Unreadable, input_tensor
from recipebench.harness.trace import StepCounter, as_list


@dataclass(frozen=True)
class Probe:
    name: str
    fn: Callable[[Subject], float]
    requires: frozenset
    higher_is_worse: bool  # direction of the defect
    doc: str


PROBES: dict[str, Probe] = {}


def probe(requires=(), higher_is_worse=True):
    def deco(fn):
        PROBES[fn.__name__] = Probe(fn.__name__, fn, frozenset(requires), higher_is_worse, (fn.__doc__ or "").strip())
        return fn
    return deco


def applicable_probes(capabilities) -> list[Probe]:
    return [p for p in PROBES.values() if p.requires <= set(capabilities)]


@probe(higher_is_worse=False)
def final_metric(s: Subject) -> float:
    """Primary metric on the test split at the end of training."""
    return s.trace.metric


@probe()
def input_mean_abs(s: Subject) -> float:
    """Largest |per-channel mean| of the batches that go into the net (normalized: ~0)."""
    return float(np.abs(np.mean(s.trace.input_mean, axis=0)).max()) if s.trace.input_mean else float("nan")


def forward_with_input_grad(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, differentiable input representation): ``x`` itself for real-valued
    inputs, the output of the first ``nn.Embedding`` for token ids."""
    model.eval()
    x = input_tensor(x)
    if x.is_floating_point():
        x = x.clone().requires_grad_(True)
        return model(x), x
    emb = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
    if emb is None:
        raise Unreadable(f"token inputs reach no nn.Embedding in {type(model).__name__}")
    seen = {}

    def keep(module, args, out):
        seen["rep"] = out  # (B, T, d), part of the graph since the embedding weights require grad
        return out

    handle = emb.register_forward_hook(keep)
    try:
        out = model(x)
    finally:
        handle.remove()
    return out, seen["rep"]


def dependency_map(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Backprop dependency chart across the batch: row i is the gradient mass of a
    scalar of example i's outputs on each input example, normalized to sum 1 (the
    identity matrix when examples are independent). The scalar is a fixed random
    weighting of the outputs rather than their plain sum, which is constant (zero
    gradient) when the outputs are probabilities."""
    out, rep = forward_with_input_grad(model, x)  # out: (B, ...), rep: (B, ...)
    if not out.requires_grad:  # no path from the input to the output at all: an all-zero chart
        return np.zeros((len(x), len(x)))
    weights = torch.randn(out.shape[1:], generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    rows = []
    for i in range(len(x)):
        (g,) = torch.autograd.grad((out[i] * weights).sum(), rep, retain_graph=True, allow_unused=True)
        mass = torch.zeros(len(x), dtype=torch.float64) if g is None else g.abs().flatten(1).sum(1).double()  # (B,)
        rows.append((mass / mass.sum()).numpy() if mass.sum() > 0 else mass.numpy())
    return np.stack(rows)  # (B, B)


def off_diagonal_fraction(m: np.ndarray) -> float:
    """Fraction of a dependency chart's mass off the diagonal (on *other* examples)."""
    return float((m.sum() - np.trace(m)) / m.sum()) if m.sum() > 0 else 0.0


def batch_dependency_map(s: Subject, batch: int = 16) -> np.ndarray:
    """The dependency chart of a fresh model on the first ``batch`` validation inputs."""
    return s.memo("dependency_map", lambda: dependency_map(s.fresh_model(), s.prepared.x_val[:batch]))


def future_leak_fraction(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Backprop dependency chart across time: for each position t, the gradient of the
    output at t w.r.t. the input positions; returns the fraction of gradient mass on
    positions after t (0 for a causal model)."""
    out, rep = forward_with_input_grad(model, x)  # out: (B, T, V), rep: (B, T, d)
    leak = total = 0.0
    for t in range(out.shape[1]):
        (g,) = torch.autograd.grad(out[:, t].sum(), rep, retain_graph=True)
        mass = g.abs().sum(dim=(0, 2))  # (T,)
        leak += float(mass[t + 1:].sum())
        total += float(mass.sum())
    return leak / total if total > 0 else 0.0


@probe()
def batch_leak(s: Subject) -> float:
    """Fraction of each output's input-gradient that lands on other batch items."""
    return off_diagonal_fraction(batch_dependency_map(s))


@probe(requires={"lr_schedule"})
def lr_decades_at_half(s: Subject) -> float:
    """How many orders of magnitude the LR has fallen by mid-training."""
    lr = s.trace.lr
    return float(np.log10(max(lr) / max(lr[len(lr) // 2], 1e-30))) if lr else float("nan")


@probe(requires={"classification"})
def wrong_zero_grad_frac(s: Subject) -> float:
    """Fraction of misclassified training examples whose output gradient is exactly 0."""
    wrong = sum(s.trace.wrong)
    return sum(s.trace.wrong_zero_grad) / wrong if wrong else 0.0


def augmentation_agreement(s: Subject, steps: int = 150) -> tuple[float, float]:
    """Train on un-augmented batches, then score that model on the augmented labels
    of held-out examples the augmentation changed. Returns (agreement on augmented
    examples, accuracy on the un-augmented held-out split); agreement far below the
    accuracy means the label did not follow the transformation."""
    def run():
        p = s.prepared
        model = s.fresh_model()
        s.train(model, steps, s.batches(augment=False))
        gen = torch.Generator().manual_seed(s.seed)
        xa, ya = s.pipeline.augment(p.x_val, p.y_val, gen)
        changed = (xa != p.x_val).flatten(1).any(1)
        agreement = s.evaluate(model, xa[changed], ya[changed]) if bool(changed.any()) else float("nan")
        return agreement, s.evaluate(model, p.x_val, p.y_val)
    return s.memo(f"augmentation_agreement/{steps}", run)


@probe(requires={"flip_augmentation"}, higher_is_worse=False)
def augmented_label_agreement(s: Subject) -> float:
    """Accuracy of an un-augmented model on augmented held-out examples."""
    return augmentation_agreement(s)[0]


def expected_init_loss(s: Subject) -> float:
    """The loss a well-initialized fresh model should show (recipe "verify loss @ init").

    With the output bias initialized to the data (capability ``output_bias_init``): the
    entropy of the class prior, or the variance of the targets for L2. Otherwise the
    model predicts uniformly / zero: log(C), or the mean squared target.
    """
    y = s.prepared.y_train
    if "regression" in s.capabilities:
        y = y.double()
        return float(y.var() if "output_bias_init" in s.capabilities else (y**2).mean())
    if "output_bias_init" in s.capabilities:
        prior = s.class_prior[s.class_prior > 0]
        return float(-(prior * np.log(prior)).sum())
    return float(np.log(max(s.n_classes, 2)))


def init_loss(s: Subject, n_batches: int = 4) -> tuple[float, float]:
    """(loss of a fresh model on the first batches, the expected value)."""
    def run():
        model = s.fresh_model()
        model.eval()
        with torch.no_grad():
            losses = [float(s.batch_loss(model, x, y)) for _, (x, y) in zip(range(n_batches), s.batches())]
        return float(np.mean(losses)), expected_init_loss(s)
    return s.memo("init_loss", run)


@probe()
def init_loss_ratio(s: Subject) -> float:
    """Loss of a fresh model / its expected value (1 when initialized well)."""
    loss, expected = init_loss(s)
    return loss / expected


@probe(requires={"autoregressive"})
def future_leak(s: Subject) -> float:
    """Fraction of each position's input-gradient that lands on later positions."""
    return s.memo("future_leak", lambda: future_leak_fraction(s.fresh_model(), s.prepared.x_val[:8]))


def flat(x: torch.Tensor) -> np.ndarray:
    """(N, ...) tensor -> (N, features) float array."""
    return x.reshape(len(x), -1).float().numpy()


def nn_disagreements(x: torch.Tensor, y: torch.Tensor) -> int:
    """Examples whose leave-one-out nearest neighbour (raw inputs) has another label."""
    from sklearn.neighbors import NearestNeighbors

    x, y = flat(x), y.numpy()
    _, idx = NearestNeighbors(n_neighbors=2).fit(x).kneighbors(x)
    return int(np.sum(y[idx[:, 1]] != y))


@probe(requires={"classification"})
def label_knn_disagreement(s: Subject) -> float:
    """Leave-one-out 1-nearest-neighbour label disagreement on (up to 1000) training inputs."""
    def run():
        n = min(1000, len(s.prepared.y_train))
        return nn_disagreements(s.prepared.x_train[:n], s.prepared.y_train[:n]) / n
    return s.memo("label_knn_disagreement", run)


@probe(requires={"classification"})
def label_prior_shift(s: Subject) -> float:
    """Total variation distance between the training and validation label distributions."""
    k = s.n_classes
    tr = np.bincount(s.prepared.y_train.numpy(), minlength=k) / len(s.prepared.y_train)
    va = np.bincount(s.prepared.y_val.numpy(), minlength=k) / len(s.prepared.y_val)
    return float(0.5 * np.abs(tr - va).sum())


def duplicate_fractions(s: Subject) -> tuple[float, float]:
    """(share of test inputs with an exact duplicate in training, share of duplicated
    training inputs)."""
    train = [row.tobytes() for row in flat(s.prepared.x_train)]
    seen = set(train)
    return float(np.mean([row.tobytes() in seen for row in flat(s.prepared.x_test)])), 1 - len(seen) / len(train)


@probe(requires={"classification"})
def cross_split_duplicates(s: Subject) -> float:
    """Fraction of test inputs with an exact duplicate among the training inputs."""
    return duplicate_fractions(s)[0]


def label_batches(s: Subject, n: int = 30) -> list[np.ndarray]:
    """Labels of the first ``n`` training batches the net receives (no augmentation)."""
    return [input_tensor(y, "the target").numpy() for _, (_, y) in zip(range(n), s.batches(augment=False))]


def first_epoch_labels(s: Subject) -> np.ndarray:
    """Labels of the first training epoch in the order the loader feeds them (no
    augmentation): whatever sampler, shuffle or ``order`` seam the pipeline uses."""
    return s.memo("first_epoch_labels", lambda: np.concatenate(
        [input_tensor(y, "the target").numpy() for _, (_, y) in zip(range(s.steps_per_epoch), s.batches(augment=False))]))


@probe(requires={"classification"})
def label_run_fraction(s: Subject) -> float:
    """Share of neighbouring examples in the first epoch as fed that have the same label
    (about sum(p_c^2) when shuffled; near 1 when sorted by label)."""
    labels = first_epoch_labels(s)
    return float(np.mean(labels[1:] == labels[:-1]))


@probe(requires={"imbalanced"}, higher_is_worse=False)
def batch_minority_ratio(s: Subject) -> float:
    """Rare-class share in training batches / its share in the training split."""
    prior = s.class_prior
    rare = int(np.argmin(prior))
    return float(np.mean(np.concatenate(label_batches(s, 50)) == rare) / prior[rare])


@probe()
def eval_nondeterminism(s: Subject) -> float:
    """|difference| between two evaluations of the same fresh model on the test split."""
    p = s.prepared
    model = s.fresh_model()
    torch.manual_seed(1)
    first = s.evaluate(model, p.x_test, p.y_test)
    torch.manual_seed(2)
    return abs(first - s.evaluate(model, p.x_test, p.y_test))


@probe(requires={"classification"})
def output_is_probability(s: Subject) -> float:
    """Share of output rows that are already probabilities (non-negative, summing to 1)."""
    model = s.fresh_model()
    model.eval()
    with torch.no_grad():
        out = s.forward(model, s.prepared.x_val[:64])
    return float(((out >= 0).all(-1) & ((out.sum(-1) - 1).abs() < 1e-4)).float().mean())


def graph_leaves(output: torch.Tensor) -> list[torch.Tensor]:
    """Every leaf tensor that requires grad in the autograd graph of ``output``."""
    leaves, seen, stack = [], set(), [output.sum().grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.append(fn.variable)
        stack += [nxt for nxt, _ in fn.next_functions]
    return leaves


@probe(higher_is_worse=False)
def registered_param_fraction(s: Subject) -> float:
    """Registered parameter elements / parameter elements the forward pass actually uses."""
    def run():
        model = s.fresh_model()
        used = {id(t): t.numel() for t in graph_leaves(s.forward(model, s.prepared.x_train[:4]))}
        registered = {id(q) for q in model.parameters()}
        total = sum(used.values())
        return sum(n for i, n in used.items() if i in registered) / total if total else 1.0
    return s.memo("registered_param_fraction", run)


@probe()
def frozen_param_fraction(s: Subject) -> float:
    """Share of parameters (by count of tensors) that never get a gradient or never change."""
    t = s.trace
    bad = [n for n in t.grad_norm if max(t.grad_norm[n], default=0) == 0 or max(t.update_norm[n], default=0) == 0]
    return len(bad) / max(1, len(t.grad_norm))


def total_grad_norm(t) -> np.ndarray:
    return np.sqrt(np.sum([np.square(g) for g in t.grad_norm.values()], axis=0))


@probe(requires={"lr_schedule"})
def lr_oscillations(s: Subject) -> float:
    """Times the LR dips below 1% of its peak and recovers above 50%."""
    lr = np.asarray(s.trace.lr)
    low, count = False, 0
    for v in lr / lr.max():
        if v < 0.01 and not low:
            low, count = True, count + 1
        elif v > 0.5:
            low = False
    return float(count)


@probe(requires={"lr_schedule"})
def lr_moves_mid_epoch(s: Subject) -> float:
    """Share of optimizer steps inside an epoch (not its first) at which the LR the
    optimizer used changed: 0 for a schedule stepped per epoch, most steps when it is
    stepped per iteration."""
    lr, epoch = np.asarray(s.trace.lr), s.trace.step_epochs(s.steps_per_epoch)
    inside = [i for i in range(1, len(lr)) if epoch[i] == epoch[i - 1]]
    return float(np.mean([lr[i] != lr[i - 1] for i in inside])) if inside else 0.0


@probe(requires={"lr_schedule"}, higher_is_worse=False)
def mean_lr_ratio(s: Subject) -> float:
    """Mean LR the optimizer used over training / the configured LR (``pipeline.lr``)."""
    return float(np.mean(s.trace.lr) / s.pipeline.lr) if s.trace.lr else float("nan")


@probe(requires={"plateau_scheduler"})
def final_lr_ratio(s: Subject) -> float:
    """LR the optimizer used at the last step / the configured LR (a plateau scheduler
    that is never told of a plateau never lowers it)."""
    return float(s.trace.lr[-1] / s.pipeline.lr) if s.trace.lr else float("nan")


@probe()
def reported_metric_gap(s: Subject) -> float:
    """|the pipeline's own (reported) test metric - the harness's true metric|: an
    evaluation that over-reports and one that under-reports are both wrong."""
    return float(abs(s.trace.reported_metric - s.trace.metric))


@probe(requires={"dataloader_workers"})
def worker_augmentation_repeats(s: Subject) -> float:
    """Share of augmented inputs repeated exactly when the loader is fed N copies of one
    example (workers that share one random stream augment identically)."""
    def run():
        x = s.prepared.x_train[:1].expand_as(s.prepared.x_train).contiguous()  # (N, ...) copies of one example
        rows = [r.numpy().tobytes() for _, (xb, _) in zip(range(4), s.batches(augment=False, x=x)) for r in xb]
        return 1 - len(set(rows)) / len(rows)
    return s.memo("worker_augmentation_repeats", run)


def epoch_order_stats(s: Subject) -> tuple[float, float, int]:
    """(share of positions at which epoch 1 feeds exactly the input epoch 0 fed there,
    the chance of that between two independent shuffles, positions compared).

    The chance is sum over distinct inputs u of q_u^2, q_u the share of epoch 0's
    inputs equal to u: 1/N when no input repeats. Batches without augmentation;
    ``steps_per_epoch`` batches make an epoch."""
    def run():
        spe = s.steps_per_epoch
        xs = [input_tensor(xb) for _, (xb, _) in zip(range(2 * spe), s.batches(augment=False))]
        a, b = torch.cat(xs[:spe]), torch.cat(xs[spe:])
        n = min(len(a), len(b))
        same = float((a[:n] == b[:n]).flatten(1).all(1).float().mean()) if n else 0.0
        _, counts = np.unique(flat(a), axis=0, return_counts=True)
        q = counts / counts.sum()
        return same, float((q**2).sum()), n
    return s.memo("epoch_order_stats", run)


@probe(requires={"epoch_sampler"})
def epoch_order_repeats(s: Subject) -> float:
    """Share of positions at which epoch 1 feeds the same input as epoch 0."""
    return epoch_order_stats(s)[0]


@probe(requires={"grad_clipping"})
def max_grad_norm(s: Subject) -> float:
    """Largest total gradient norm that reached the optimizer (after clipping)."""
    return float(total_grad_norm(s.trace).max())


@probe(higher_is_worse=False)
def weight_norm_ratio(s: Subject) -> float:
    """Sum of parameter norms after training / at initialization."""
    t = s.trace
    return sum(t.param_norm_final.values()) / max(sum(t.param_norm.values()), 1e-12)


@probe()
def eval_mode_training_fraction(s: Subject) -> float:
    """Share of training forward passes that ran with the model in eval mode."""
    modes = s.trace.train_mode
    return 1 - sum(modes) / len(modes) if modes else 0.0


MAX_WINDOW = 64  # train_step calls searched for the first optimizer step


def carried_gradient_fraction(s: Subject) -> float:
    """Norm of the gradient already in ``.grad`` when the first train step after an
    optimizer step delivers each parameter's first gradient, over the norm of those
    fresh gradients (LR 0; the same batch and random state every call): 0 when the
    script zeroes its gradients after stepping, about 1 when they accumulate across
    optimizer steps. Calls are counted as in training (batch index, epoch length), so
    a script that accumulates over k batches is read after its k-th, in optimizer
    steps. Read before autograd adds the new gradient, so clipping and the optimizer's
    step (which run after) do not enter."""
    def run():
        model = s.fresh_model()
        model.train()
        named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
        opt = s.pipeline.optimizer(named, 0.0)
        counter = StepCounter(as_list(opt))
        x, y = next(s.batches(augment=False))
        seen, sums = set(), {"carried": 0.0, "fresh": 0.0}

        def watch(name, param):
            def record(grad):  # runs before autograd adds ``grad`` into ``param.grad``
                if name not in seen:
                    seen.add(name)
                    sums["carried"] += float(param.grad.norm()) ** 2 if param.grad is not None else 0.0
                    sums["fresh"] += float(grad.norm()) ** 2
            return record

        handles = [q.register_hook(watch(n, q)) for n, q in named]
        spe = s.steps_per_epoch
        try:
            stepped_before = False
            for call in range(MAX_WINDOW):
                seen.clear()
                sums.update(carried=0.0, fresh=0.0)
                torch.manual_seed(s.seed)
                ctx = StepContext(steps=s.pipeline.steps, steps_per_epoch=spe).at(call, sum(counter.counts.values()))
                s.pipeline.train_step(s.pipeline, model, opt, x, y, ctx)
                if stepped_before:
                    break
                stepped_before = sum(counter.counts.values()) > 0
        finally:
            counter.remove()
            for h in handles:
                h.remove()
        return (sums["carried"] / sums["fresh"]) ** 0.5 if sums["fresh"] > 0 else 0.0
    return s.memo("carried_gradient_fraction", run)


@probe()
def grad_carryover(s: Subject) -> float:
    """Gradient found in ``.grad`` at the first train step after an optimizer step (LR 0)
    / the fresh gradient of that step (0 clean, ~1 when nothing zeroes it)."""
    return carried_gradient_fraction(s)


@probe(requires={"split_fitting"})
def unseen_input_ids(s: Subject) -> float:
    """Distinct token ids of the test inputs that never occur in the training inputs,
    as a share of the distinct test ids (padding 0 left out): only ``<unk>`` when the
    vocabulary was fitted on the training split alone. NaN for real-valued inputs."""
    p = s.prepared
    x_train, x_test = input_tensor(p.x_train), input_tensor(p.x_test)
    if x_train.is_floating_point() or x_test.is_floating_point():
        return float("nan")
    test_ids = set(torch.unique(x_test).tolist()) - {0}
    return len(test_ids - set(torch.unique(x_train).tolist())) / len(test_ids) if test_ids else 0.0


def stepped_gradient_ratio(s: Subject) -> float:
    """Norm of the gradient in ``.grad`` when the optimizer first steps / norm of the
    gradient of the pipeline's loss on the batch. The same batch and random state feed
    every ``train_step`` call (LR 0, clipping off, calls counted as in training), so a
    script that accumulates k micro-batches of loss / k steps with exactly the batch's
    gradient: 1 (also without accumulation); k when the loss is not divided, 1/k when
    each micro-batch zeroes the ones before it."""
    def run():
        p = s.pipeline.replace(clip=lambda model, max_norm: None)
        model = s.fresh_model()
        model.train()
        named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
        x, y = next(s.batches(augment=False))
        torch.manual_seed(s.seed)
        ref = torch.autograd.grad(p.step_loss(p, model, x, y), [q for _, q in named], allow_unused=True)
        ref_norm = float(torch.stack([g.norm() for g in ref if g is not None]).norm())
        optimizers = as_list(p.optimizer(named, 0.0))
        stepped = []

        def read(optimizer, args, kwargs):
            if not stepped:
                grads = [q.grad.norm() for _, q in named if q.grad is not None]
                stepped.append(float(torch.stack(grads).norm()) if grads else 0.0)

        handles = [o.register_step_pre_hook(read) for o in optimizers]
        opt = optimizers[0] if len(optimizers) == 1 else tuple(optimizers)
        spe = s.steps_per_epoch
        try:
            for call in range(MAX_WINDOW):
                torch.manual_seed(s.seed)
                ctx = StepContext(step=call, epoch=call // spe, batch_idx=call % spe, steps=p.steps,
                                  steps_per_epoch=spe, optimizer_steps=0)
                p.train_step(p, model, opt, x, y, ctx)
                if stepped:
                    break
        finally:
            for h in handles:
                h.remove()
        return stepped[0] / ref_norm if stepped and ref_norm > 0 else float("nan")
    return s.memo("stepped_gradient_ratio", run)


@probe(requires={"grad_accumulation"})
def accumulated_grad_scale(s: Subject) -> float:
    """|log2| of (gradient the optimizer first steps with / gradient of the mean loss of
    the micro-batches it accumulated), with identical micro-batches (LR 0, no
    clipping): 0 when the loss is divided by the accumulation steps, log2(k) when it is
    not or when each micro-batch zeroes the ones before it."""
    return abs(float(np.log2(stepped_gradient_ratio(s))))


@probe(requires={"distillation"})
def loss_nondeterminism(s: Subject) -> float:
    """|difference| between the pipeline's loss of the same fresh model, in eval mode and
    without gradients, on the same batch under two random seeds, relative to the loss:
    0 when nothing random enters the loss (a teacher in eval mode), > 0 when the
    targets themselves are drawn anew (a teacher's dropout left active)."""
    def run():
        model = s.fresh_model()
        model.eval()
        x, y = next(s.batches(augment=False))
        with torch.no_grad():
            torch.manual_seed(1)
            first = float(s.batch_loss(model, x, y))
            torch.manual_seed(2)
            second = float(s.batch_loss(model, x, y))
        return abs(first - second) / max(abs(first), 1e-12)
    return s.memo("loss_nondeterminism", run)


@probe()
def negative_loss_fraction(s: Subject) -> float:
    """Share of training steps whose loss is below 0. Cross-entropy, NLL, KL, BCE and
    squared errors cannot be negative: a negative one is fed values outside its
    domain (probabilities where log-probabilities belong)."""
    loss = np.asarray(s.trace.loss, dtype=float)
    return float((loss < 0).mean()) if len(loss) else float("nan")


@probe(requires={"lr_schedule"})
def final_lr_fraction_of_peak(s: Subject) -> float:
    """LR of the last optimizer step / the largest LR of the training: small when a
    decaying schedule has annealed by the end, 1 when the LR is still at (or rising
    to) its peak as training stops."""
    lr = np.asarray(s.trace.lr, dtype=float)
    return float(lr[-1] / lr.max()) if len(lr) and lr.max() > 0 else float("nan")


@probe(requires={"structured_batch"})
def attended_padding_fraction(s: Subject) -> float:
    """Share of padding positions (``input_ids == 0``) in the first training batches
    whose ``attention_mask`` lets them be attended to: 0 when the collate masks the
    padding. NaN for batches that are not dicts of ``input_ids`` and ``attention_mask``."""
    def run():
        seen = attended = 0
        for _, (x, _) in zip(range(8), s.batches(augment=False)):
            if not (isinstance(x, dict) and "input_ids" in x and "attention_mask" in x):
                return float("nan")
            pad = x["input_ids"] == 0
            seen += int(pad.sum())
            attended += int((x["attention_mask"][pad] != 0).sum())
        return attended / seen if seen else 0.0
    return s.memo("attended_padding_fraction", run)
