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

from harness.subject import Subject


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


def batch_leak_fraction(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Backprop dependency chart across the batch: gradient of each example's output
    sum w.r.t. the whole input batch; returns the fraction of gradient mass that falls
    on *other* examples (0 when examples are independent)."""
    model.eval()
    x = x.clone().requires_grad_(True)
    out = model(x)  # (B, ...)
    leak = total = 0.0
    for i in range(len(x)):
        (g,) = torch.autograd.grad(out[i].sum(), x, retain_graph=True)
        mass = g.abs().flatten(1).sum(1)  # (B,)
        leak += float(mass.sum() - mass[i])
        total += float(mass.sum())
    return leak / total if total > 0 else 0.0


@probe()
def batch_leak(s: Subject) -> float:
    """Fraction of each output's input-gradient that lands on other batch items."""
    return s.memo("batch_leak", lambda: batch_leak_fraction(s.fresh_model(), s.prepared.x_val[:16]))


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


def init_loss(s: Subject, n_batches: int = 4) -> tuple[float, float]:
    """(loss of a fresh model on the first batches, entropy of the class prior)."""
    def run():
        prior = s.class_prior[s.class_prior > 0]
        model = s.fresh_model()
        model.eval()
        with torch.no_grad():
            losses = [float(s.pipeline.loss(model(x), y)) for _, (x, y) in zip(range(n_batches), s.batches())]
        return float(np.mean(losses)), float(-(prior * np.log(prior)).sum())
    return s.memo("init_loss", run)


@probe(requires={"classification"})
def init_loss_ratio(s: Subject) -> float:
    """Loss of a fresh model / entropy of the class prior (1 when initialized well)."""
    loss, expected = init_loss(s)
    return loss / expected
