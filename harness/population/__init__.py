"""The population: a seeded generator of complete, legitimate training setups.

``draw(seed)`` turns a generator seed into a :class:`~recipebench.harness.pipeline.Pipeline`
drawn from a grammar of real-world recipe choices (``grammar.py``: task, data source,
model family, width, depth, activation, normalization layer, dropout, init, input
scaling, loss, label smoothing, output-bias init, optimizer and its learning rate,
weight decay, schedule, batch size, gradient accumulation, clipping, training
length), assembled with the capabilities it honestly offers (``assemble.py``). Same
seed, same choices, same data, same training.

**The split (fixed; never changed):** generator seed ``s`` is a *calibration* draw when
the first hexadecimal digit of ``sha256(f"recipebench-population/{s}")`` is 0-7, a
*test* draw otherwise (about half each). Thresholds and design choices may look at
calibration draws only; test draws are an inexhaustible out-of-sample set, read once
per release (reports/TEST_LOG.md).

**Names** encode the seed and its side: ``pop_c0017`` (calibration seed 17),
``pop_t0042`` (test seed 42); at least four digits. They resolve everywhere a
pipeline name does (``PIPELINES.get``, ``--pipelines``, the workers) through a
registry resolver, without registering the unbounded family; a name whose letter
disagrees with its seed's side is an unknown pipeline.

**Admission** (``admission.py``): a draw belongs to the population only if it trains;
the side's population is its admitted seeds in increasing order (a rejected seed is
skipped, deterministically).
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Callable, Iterator

from recipebench.harness.pipeline import PIPELINES, Pipeline
from recipebench.harness.population import build, data, models  # noqa: F401  (cache keys read this module's imports)
from recipebench.harness.population.assemble import assemble
from recipebench.harness.population.grammar import Recipe, choose

SIDES = {"c": "calibration", "t": "test"}
NAME = re.compile(r"pop_([ct])(\d{4,})")


def side_of(seed: int) -> str:
    """The fixed split: 'calibration' or 'test' (module docstring)."""
    return "calibration" if hashlib.sha256(f"recipebench-population/{seed}".encode()).hexdigest()[0] in "01234567" \
        else "test"


def name_of(seed: int) -> str:
    return f"pop_{side_of(seed)[0]}{seed:04d}"


def seed_of(name: str) -> int | None:
    """The generator seed a draw's name encodes, or None when it is not a draw's name."""
    m = NAME.fullmatch(name) if isinstance(name, str) else None
    if not m:
        return None
    seed = int(m.group(2))
    return seed if name == name_of(seed) else None  # the side letter and the zero-padding must match


def seeds(side: str, start: int = 0) -> Iterator[int]:
    """Generator seeds of one side, in increasing order, without end."""
    s = start
    while True:
        if side_of(s) == side:
            yield s
        s += 1


def recipe(seed: int) -> Recipe:
    return choose(seed)


@lru_cache(maxsize=1024)
def draw(seed: int) -> Pipeline:
    """The draw of generator seed ``seed`` (admitted or not), named by :func:`name_of`."""
    return assemble(choose(seed), name_of(seed), side_of(seed))


@lru_cache(maxsize=1024)
def factory(name: str) -> Callable[[], Pipeline] | None:
    """The registry resolver: a zero-argument factory for a draw's name, else None."""
    seed = seed_of(name)
    if seed is None:
        return None

    def make() -> Pipeline:
        return draw(seed)

    make.pipeline_name = name
    make.__qualname__ = f"draw[{name}]"
    return make


factory.pattern = NAME.pattern  # the names it serves: a mistyped zoo name is refused without importing torch
PIPELINES.add_resolver(factory)
