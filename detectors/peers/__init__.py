"""Peers: the tools people use today, wrapped as detectors and scored in the same matrix.

They are not part of the default run (``recipebench run --with-peers`` adds them).
Each adapter imports its tool lazily, so a missing install is an ``error`` cell with
the install command, never a broken registry.
"""
import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

REF_SEEDS = (1000, 1001, 1002, 1003, 1004)  # clean reference seeds, disjoint from the scored ones


def cache_root(tool: str) -> Path:
    """Where a peer keeps what it computes once per pipeline (``$RECIPEBENCH_CACHE_DIR``)."""
    return Path(os.environ.get("RECIPEBENCH_CACHE_DIR", ".recipebench_cache")).resolve() / tool


@contextmanager
def locked(path: Path):
    """An exclusive file lock: two workers never compute the same reference twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_reference(tool: str, s, measure, *key) -> dict:
    """``measure(subject)`` on the *clean* pipeline of ``s`` at ``REF_SEEDS`` (the adapter is
    not told the bug; the reference is the pipeline as registered), as ``{seed: result}``.
    Computed once per pipeline, harness and adapter source and ``key`` (e.g. the tool's
    version), kept as JSON under ``cache_root(tool)``; a file lock keeps two workers from
    computing it twice."""
    from recipebench.harness.cache import code_key, core_key, digest
    from recipebench.harness.pipeline import get_pipeline

    clean = get_pipeline(s.pipeline.name)
    digest_ = digest(clean.name, code_key(clean.build_model), code_key(measure), core_key(), REF_SEEDS, *key)
    path = cache_root(tool) / f"{clean.name}-{digest_}.json"
    with locked(path.with_suffix(".lock")):
        if not path.exists():
            runs = {seed: measure(type(s)(clean, seed)) for seed in REF_SEEDS}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(runs))
            tmp.replace(path)
    return json.loads(path.read_text())


def outside_clean_range(value: float, clean: list, min_margin: float, below_only: bool = False) -> tuple[float, float]:
    """How far ``value`` lies outside the range of its clean reference values, in margins
    (> 1: flagged), with ``margin = max(min_margin, max - min of the clean values)``; and
    the margin. ``below_only``: only a shortfall below the clean minimum counts (a score
    where lower is worse)."""
    lo, hi = min(clean), max(clean)
    margin = max(min_margin, hi - lo)
    excess = (lo - value) / margin
    return (excess if below_only else max(excess, (value - hi) / margin)), margin
