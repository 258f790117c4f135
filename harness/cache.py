"""Cache keys (hashes of canonical JSON over source code, configuration and versions)
and the on-disk trace cache (atomic writes, checksummed reads)."""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import pickle
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from recipebench.harness.registry import source_of

CORE_MODULES = tuple(f"recipebench.harness.{m}" for m in ("pipeline", "trace", "subject", "probes"))


def digest(*parts) -> str:
    """sha256 of the canonical JSON of ``parts``."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


@lru_cache(maxsize=None)
def core_key() -> str:
    import importlib

    return digest([source_of(importlib.import_module(m)) for m in CORE_MODULES],
                  torch.__version__, np.__version__)


def code_key(obj) -> str:
    """Hash of the source of the module defining ``obj`` plus the same-package modules
    it pulls names from (e.g. a pipeline and its shared ``common`` module)."""
    module = inspect.getmodule(obj)
    package = (module.__name__.rpartition(".")[0] or module.__name__) if module else ""
    related = sorted({inspect.getmodule(v).__name__ for v in vars(module).values()
                      if inspect.getmodule(v) is not None and inspect.getmodule(v) is not module
                      and package and inspect.getmodule(v).__name__.startswith(package + ".")}) if module else []
    import importlib

    return digest(source_of(obj), [source_of(importlib.import_module(r)) for r in related])


class ResultCache:
    """Content-addressed results under ``root/<kind>/<key>.pkl`` (kinds: ``traces``,
    ``runs``, ``verdicts``), each file prefixed by the sha256 of its payload and
    written atomically. A new output directory, or a new detector beside old ones,
    reuses every result whose key is unchanged."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pkl"

    def get(self, kind: str, key: str):
        path = self._path(kind, key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        checksum, payload = blob[:64], blob[64:]
        if hashlib.sha256(payload).hexdigest().encode() != checksum:
            warnings.warn(f"cache entry {path} is corrupted (checksum mismatch); recomputing", stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        return pickle.loads(payload)

    def put(self, kind: str, key: str, obj) -> None:
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(hashlib.sha256(payload).hexdigest().encode() + payload)
        os.replace(tmp, path)
