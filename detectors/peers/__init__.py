"""Peers: the tools people use today, wrapped as detectors and scored in the same matrix.

They are not part of the default run (``recipebench run --with-peers`` adds them).
Each adapter imports its tool lazily, so a missing install is an ``error`` cell with
the install command, never a broken registry.
"""
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


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
