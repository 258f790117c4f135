"""Detector, Verdict, Outcome and the detector registry.

A detector automates one check of the recipe. It sees the pipeline only through a
:class:`recipebench.harness.subject.Subject` and is never told which bug, if any, was injected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from recipebench.harness.registry import Registry, RegistryError, validate_entry

STAGES = ("data", "init", "baselines", "backprop", "training", "regularize", "peers")
KINDS = ("passive", "active")  # passive: reads the shared trace; active: runs its own experiment
REQUIRED_FIELDS = ("name", "description", "recipe_step", "stage", "kind", "cost")


class Outcome(str, Enum):
    """``advice``: the run passes, but the recipe's advice applies (e.g. "init the output
    bias to the prior" on a default-initialized head). It is scored like a pass: not a
    detection on a bug run, not a false positive on a clean one; the report counts it
    separately (``advice_rate`` in detectors.csv)."""

    FLAGGED = "flagged"
    PASSED = "passed"
    ADVICE = "advice"
    NOT_APPLICABLE = "not_applicable"
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass
class Verdict:
    """What a detector concluded, with the numbers behind it."""

    outcome: Outcome
    score: float = math.nan  # the statistic compared with the threshold; higher = more suspicious
    evidence: dict = field(default_factory=dict)
    steps: int | None = None  # training steps the detector needed to decide

    @property
    def flagged(self) -> bool:
        return self.outcome is Outcome.FLAGGED


class Detector:
    """A recipe check. Subclasses set the class fields and implement :meth:`check`.

    ``cost`` is a relative cost class: 1 reads the trace, 2 runs a few forward or
    backward passes, 3 trains a model. ``example_bug`` names a registered bug the
    detector must catch (its own test in ``tests/test_registry.py``).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    recipe_step: ClassVar[str]
    stage: ClassVar[str]
    kind: ClassVar[str]
    cost: ClassVar[int]
    requires: ClassVar[frozenset] = frozenset()
    excludes: ClassVar[frozenset] = frozenset()  # capabilities where the check does not apply
    example_bug: ClassVar[str | None] = None
    example_pipeline: ClassVar[str | None] = None  # where the example bug shows (default: the first that offers both)
    needs_reference: ClassVar[bool] = False  # reads clean runs of other seeds
    peer: ClassVar[bool] = False  # a wrapped third-party tool: only with --with-peers
    in_default_run: ClassVar[bool] = True  # False: listed and tested, run only when named (cost)
    min_timeout: ClassVar[float] = 0.0  # seconds a cell of this detector gets at least, whatever --timeout says

    def applies_to(self, capabilities) -> bool:
        return set(self.requires) <= set(capabilities) and not set(self.excludes) & set(capabilities)

    def check(self, subject) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def decide(flag: bool, score: float, steps: int | None = None, advice: bool = False, **evidence) -> Verdict:
        """A flagged, advice or passed verdict (``advice`` only counts when not ``flag``).
        ``score`` is oriented so that higher is more suspicious (``--holdout`` recalibrates
        a threshold on it)."""
        outcome = Outcome.FLAGGED if flag else Outcome.ADVICE if advice else Outcome.PASSED
        return Verdict(outcome, float(score), {k: _plain(v) for k, v in evidence.items()}, steps)


def _plain(v):
    """Evidence values as JSON-friendly plain numbers."""
    if isinstance(v, float):
        return round(v, 6)
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return round(float(v.item()), 6)
    return v


def _validate_detector(entry: object) -> str:
    validate_entry(entry, "detector", Detector, REQUIRED_FIELDS, "check")
    if entry.kind not in KINDS:
        raise RegistryError(f"detector '{entry.name}' has kind '{entry.kind}'; choose from {KINDS}")
    if entry.stage not in STAGES:
        raise RegistryError(f"detector '{entry.name}' has stage '{entry.stage}'; choose from {STAGES}")
    return entry.name


DETECTORS: Registry[type[Detector]] = Registry("detector", "recipebench.detectors", "recipebench.detectors", _validate_detector)


def register_detector(cls: type[Detector]) -> type[Detector]:
    """Class decorator: validate and register a detector under ``cls.name``."""
    return DETECTORS.register(cls)
