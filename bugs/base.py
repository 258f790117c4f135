"""The Bug: a registered, silent mutation of a pipeline at a named seam."""
from __future__ import annotations

from typing import ClassVar

from recipebench.harness.pipeline import Pipeline
from recipebench.harness.registry import Registry, RegistryError, validate_entry

FAMILIES = ("data", "model", "loss", "optim", "control")  # control: a legitimate variant (bugs/controls.py)
# The catalog is split once (issue "Recall on bugs nobody wrote the detectors for"):
# detectors may be designed on "calibration" bugs (a detector's example_bug is one);
# "test" bugs are written blind, from public reports, by someone who has not read
# detectors/, and are not read while detectors are designed.
SPLITS = ("calibration", "test")
REQUIRED_FIELDS = ("name", "description", "recipe_step", "source", "family", "symptom", "expected_symptom")


class Bug:
    """A silent training mistake.

    Subclasses set the class attributes below and implement :meth:`apply`, which
    returns a mutated copy of the pipeline via ``pipeline.replace(seam=...)``.
    ``severities`` maps a level name to the knob value (``self.level``); the bug's
    ``default_severity`` is the one used in the default matrix.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    recipe_step: ClassVar[str]  # the recipe check that should catch it
    source: ClassVar[str]  # a public place where the mistake was made or described
    family: ClassVar[str]  # one of FAMILIES
    requires: ClassVar[frozenset] = frozenset()  # pipeline capabilities needed
    excludes: ClassVar[frozenset] = frozenset()  # capabilities where the mistake is no mistake
    symptom: ClassVar[str]  # name of the probe (harness.probes) that shows the defect
    symptom_higher_is_worse: ClassVar[bool | None] = None  # None: the probe's own direction (an LR
    # ratio is worse higher for a plateau never told of a plateau, lower for a schedule that collapses)
    expected_symptom: ClassVar[str]  # the symptom in words
    severities: ClassVar[dict] = {"default": None}
    control: ClassVar[bool] = False  # a negative control (bugs/controls.py), not a bug
    default_severity: ClassVar[str] = "default"
    split: ClassVar[str] = "calibration"  # one of SPLITS

    def __init__(self, severity: str | None = None):
        severity = severity or self.default_severity
        if severity not in self.severities:
            raise RegistryError(
                f"bug '{self.name}' has no severity '{severity}'; choose from {sorted(self.severities)}"
            )
        self.severity = severity
        self.level = self.severities[severity]

    def applies_to(self, pipeline: Pipeline) -> bool:
        caps = set(pipeline.capabilities)
        return set(self.requires) <= caps and not set(self.excludes) & caps

    def apply(self, pipeline: Pipeline) -> Pipeline:  # pragma: no cover - abstract
        raise NotImplementedError


def _validate_bug(entry: object) -> str:
    validate_entry(entry, "bug", Bug, REQUIRED_FIELDS, "apply")
    if entry.family not in FAMILIES:
        raise RegistryError(f"bug '{entry.name}' has family '{entry.family}'; choose from {FAMILIES}")
    if entry.split not in SPLITS:
        raise RegistryError(f"bug '{entry.name}' has split '{entry.split}'; choose from {SPLITS}")
    if entry.default_severity not in entry.severities:
        raise RegistryError(f"bug '{entry.name}': default_severity '{entry.default_severity}' not in severities")
    from recipebench.harness.probes import PROBES

    if entry.symptom not in PROBES:
        raise RegistryError(f"bug '{entry.name}': unknown symptom probe '{entry.symptom}'; probes: {sorted(PROBES)}")
    return entry.name


BUGS: Registry[type[Bug]] = Registry("bug", "recipebench.bugs", "recipebench.bugs", _validate_bug)


def register_bug(cls: type[Bug]) -> type[Bug]:
    """Class decorator: validate and register a bug under ``cls.name``."""
    return BUGS.register(cls)


def parse_variant(variant: str) -> tuple[str, str | None]:
    """``"bug@severity"`` -> (bug, severity); ``"clean"`` -> ("clean", None)."""
    name, _, sev = variant.partition("@")
    return name, sev or None


def controls() -> list[str]:
    """Registered negative controls."""
    return [n for n, c in BUGS.items() if c.control]


def symptom_higher_is_worse(bug: type[Bug]) -> bool:
    """Which way the bug's symptom probe moves when the bug acts: the bug's own
    declaration, else the probe's."""
    from recipebench.harness.probes import PROBES

    return PROBES[bug.symptom].higher_is_worse if bug.symptom_higher_is_worse is None else bug.symptom_higher_is_worse


def make_variant(pipeline: Pipeline, variant: str) -> Pipeline:
    """The pipeline with the variant's bug applied (``clean`` returns it unchanged)."""
    name, severity = parse_variant(variant)
    if name == "clean":
        return pipeline
    return BUGS.get(name)(severity).apply(pipeline)
