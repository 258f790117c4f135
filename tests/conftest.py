"""Shared fixtures: one torch thread, registries loaded, subjects cached per session.

The suite runs on two processes (``pytest -n 2 --dist loadgroup``, see the Makefile):
every test parametrized by a ``pipeline`` is grouped with the others on that pipeline,
so a pipeline's cached clean and buggy traces are trained once, on one worker."""
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from recipebench.bugs.base import BUGS, make_variant
from recipebench.detectors.base import DETECTORS
from recipebench.harness.pipeline import PIPELINES, get_pipeline
from recipebench.harness.subject import Reference, Subject

torch.set_num_threads(1)
PIPELINES.load(), BUGS.load(), DETECTORS.load()


@lru_cache(maxsize=None)
def subject(pipeline: str, variant: str = "clean", seed: int = 0, reference: tuple = ()) -> Subject:
    """A subject whose trace and experiments are shared by every test in the session."""
    clean = None if variant == "clean" else get_pipeline(pipeline)  # whose test labels give the true metric
    return Subject(make_variant(get_pipeline(pipeline), variant), seed, reference=Reference(reference), clean=clean)


@lru_cache(maxsize=None)
def clean_reference(pipeline: str, seeds=(1, 2, 3, 4)) -> tuple:
    return tuple(subject(pipeline, "clean", s).trace.metric for s in seeds)


# Tests of a minute or more, scheduled first so that the other worker runs the rest meanwhile
# instead of waiting for one of them at the end.
LONGEST_FIRST = ("test_traincheck_flags_frozen_parameters_end_to_end", "test_misbehaving_detectors_become_cells",
                 "test_sigkill_then_resume_matches_uninterrupted_run", "test_tutorial_detector_with_eval_detector",
                 "test_ray_matches_local")


def pytest_collection_modifyitems(items):
    for item in items:
        pipeline = getattr(item, "callspec", None) and item.callspec.params.get("pipeline")
        if isinstance(pipeline, str):
            item.add_marker(pytest.mark.xdist_group(pipeline))
    items.sort(key=lambda item: item.originalname not in LONGEST_FIRST)  # stable: the rest keep their order


@pytest.fixture
def make_subject():
    return subject


@pytest.fixture(autouse=True)
def restore_registries():
    """Entries a test registers (file plugins loaded by an in-process ``main()``, throw-away
    detectors) leave the registries with the test: in a real command each run is a fresh
    process, and a later test in the same worker must see only the catalog."""
    saved = [(r, dict(r._entries)) for r in (BUGS, DETECTORS, PIPELINES)]
    yield
    for registry, entries in saved:
        registry._entries.clear()
        registry._entries.update(entries)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not reaped, counts as gone; Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
