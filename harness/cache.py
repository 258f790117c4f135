"""Cache keys (hashes of canonical JSON over source code, configuration and versions)
and the on-disk result cache (data only: JSON entries bound to their key, authenticated,
written atomically; nothing read from it can run code).

Each entry carries an HMAC-SHA256 keyed with a per-user secret kept outside the cache
directory (:func:`cache_key_file`: ``$RECIPEBENCH_CACHE_KEY_FILE``, else
``$XDG_CONFIG_HOME/recipebench/cache.key``, else ``~/.config/recipebench/cache.key``;
created with mode 0600 on first use). Whoever can write the cache directory but cannot
read that file cannot forge an entry: one edited and re-checksummed is rejected with a
warning and recomputed."""
from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import re
import warnings
from dataclasses import fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from recipebench.harness.diskio import StorageError, atomic_write, free_space
from recipebench.harness.registry import source_of
from recipebench.harness.secret import KEY_FILE_ENV, cache_key_file, load_secret  # noqa: F401  (re-exported)

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


@lru_cache(maxsize=None)  # a warm run asks for every (job, detector): 32,000 times for the default matrix
def code_key(obj) -> str:
    """Hash of the source of the module defining ``obj`` plus the same-package modules
    it pulls names from (e.g. a pipeline and its shared ``common`` module, a peer
    adapter and the helpers in its package's ``__init__``)."""
    module = inspect.getmodule(obj)
    package = (module.__name__.rpartition(".")[0] or module.__name__) if module else ""

    def same_package(name: str) -> bool:
        return bool(package) and (name == package or name.startswith(package + "."))

    related = sorted({inspect.getmodule(v).__name__ for v in vars(module).values()
                      if inspect.getmodule(v) is not None and inspect.getmodule(v) is not module
                      and same_package(inspect.getmodule(v).__name__)}) if module else []
    import importlib

    return digest(source_of(obj), [source_of(importlib.import_module(r)) for r in related])


ENTRY_FORMAT = "recipebench-cache/3"  # 2: a plain sha256 anyone could recompute; 3: HMAC with the user's key
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
_WARNED: set = set()  # (what, where) pairs already warned about in this process


def _warn_once(what, message: str) -> None:
    if what not in _WARNED:
        _WARNED.add(what)
        warnings.warn(message, stacklevel=3)


class CacheEntryError(ValueError):
    """A cache file that is not a valid entry for the requested kind and key."""


class StaleEntryError(CacheEntryError):
    """An entry in an earlier cache format (recomputed with one warning per cache)."""


def _mac(secret: bytes, kind: str, key: str, type_: str, payload: bytes) -> str:
    return hmac.new(secret, f"{ENTRY_FORMAT}\n{kind}\n{key}\n{type_}\n".encode() + payload, hashlib.sha256).hexdigest()


def _plain(obj):
    """JSON ``default``: numpy and torch numbers and arrays as plain Python data."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not plain data")


def _field_types(f) -> tuple | None:
    """Python types a JSON value may have for dataclass field ``f`` (from its annotation,
    e.g. ``list | None``); None when the annotation names something else (not checked)."""
    names = {"list": (list,), "dict": (dict,), "float": (int, float), "int": (int,), "str": (str,), "bool": (bool,),
             "None": (type(None),)}
    spec = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    out = ()
    for part in (s.strip() for s in spec.split("|")):
        if part not in names:
            return None
        out += names[part]
    return out


def encode_entry(kind: str, key: str, obj, secret: bytes) -> bytes:
    """One cache file: a header line (format, kind, key, type and the HMAC of all of
    them and the payload under ``secret``) then the payload, both JSON. A
    :class:`Trace` is stored as its fields; anything else must be a dict of plain data.
    NaN and infinities are written as JSON's ``NaN``/``Infinity`` extensions, which
    :func:`json.loads` reads back."""
    from recipebench.harness.trace import Trace

    if isinstance(obj, Trace):
        kind_of, data = "Trace", {f.name: getattr(obj, f.name) for f in fields(Trace)}
    elif isinstance(obj, dict):
        kind_of, data = "row", obj
    else:
        raise TypeError(f"cannot cache a {type(obj).__name__}: only a Trace or a dict of plain data")
    payload = json.dumps(data, separators=(",", ":"), default=_plain, allow_nan=True).encode()
    header = {"format": ENTRY_FORMAT, "kind": kind, "key": key, "type": kind_of,
              "hmac": _mac(secret, kind, key, kind_of, payload)}
    return json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def decode_entry(blob: bytes, kind: str, key: str, secret: bytes):
    """The object stored in ``blob`` if it is a well-formed entry written for exactly
    this ``kind`` and ``key`` and authenticated under ``secret``; otherwise
    :class:`CacheEntryError`. Only JSON is parsed: nothing in the file can run code."""
    from recipebench.harness.trace import Trace

    head, sep, payload = blob.partition(b"\n")
    try:
        header = json.loads(head) if sep else None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        header = None
    if isinstance(header, dict) and str(header.get("format", "")).startswith("recipebench-cache/") \
            and header.get("format") != ENTRY_FORMAT:
        raise StaleEntryError(f"format {header.get('format')}, not {ENTRY_FORMAT}")
    if not isinstance(header, dict) or header.get("format") != ENTRY_FORMAT:
        raise CacheEntryError("not a recipebench cache entry")
    if (header.get("kind"), header.get("key")) != (kind, key):
        raise CacheEntryError(f"it holds {header.get('kind')}/{header.get('key')}, not {kind}/{key}")
    type_ = header.get("type")
    if not isinstance(type_, str) or not isinstance(header.get("hmac"), str) or \
            not hmac.compare_digest(_mac(secret, kind, key, type_, payload), header["hmac"]):
        raise CacheEntryError("checksum mismatch: changed since it was written, or written with another cache key")
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise CacheEntryError(f"payload is not JSON ({exc})") from None
    if header.get("type") == "Trace" and kind == "traces" and isinstance(data, dict):
        wanted = fields(Trace)
        if set(data) != {f.name for f in wanted}:
            raise CacheEntryError(f"its fields {sorted(data)} are not Trace's {sorted(f.name for f in wanted)}")
        for f in wanted:
            types = _field_types(f)
            if types is not None and not isinstance(data[f.name], types):
                raise CacheEntryError(f"field {f.name} holds a {type(data[f.name]).__name__}, expected {f.type}")
        trace = Trace(**{f.name: data[f.name] for f in wanted if f.init})
        for f in wanted:
            if not f.init:
                object.__setattr__(trace, f.name, data[f.name])
        return trace
    if header.get("type") == "row" and kind != "traces" and isinstance(data, dict):
        return data
    raise CacheEntryError(f"a {header.get('type')} payload ({type(data).__name__}) is not what {kind} holds")


class ResultCache:
    """Content-addressed results under ``root/<kind>/<key>.json`` (kinds: ``traces``,
    ``runs``, ``verdicts``), written atomically. Data only: each file is JSON that
    names its own kind and key and carries an HMAC under the user's cache key;
    :meth:`get` returns None for (and deletes, when it can) any file that is not
    exactly the requested entry, authenticated, so that it is recomputed. A cache (or
    a cache key file) that cannot be read or written degrades to no caching with one
    warning per process. A new output directory, or a new detector beside old ones,
    reuses every result whose key is unchanged."""

    SUFFIX = ".json"

    def __init__(self, root: str | Path, key_file: str | Path | None = None):
        self.root = Path(root)
        self.key_file = Path(key_file) if key_file is not None else cache_key_file()
        self.writable = True
        self._secret: bytes | None = None
        self._keyless = False  # the key file could not be used: no caching

    def secret(self) -> bytes | None:
        """The cache key, read (or created) on first use; None, after one warning,
        when the key file cannot be used."""
        if self._secret is None and not self._keyless:
            try:
                self._secret = load_secret(self.key_file)
            except (OSError, ValueError) as exc:
                self._keyless = True
                reason = f"{exc.strerror}; {free_space(self.key_file)}" if isinstance(exc, OSError) and exc.strerror \
                    else str(exc)
                _warn_once(("key", str(self.key_file)),
                           f"cache key file {self.key_file} cannot be used ({reason}); going on without caching "
                           f"(set {KEY_FILE_ENV} to a file you can write)")
        return self._secret

    def _path(self, kind: str, key: str) -> Path:
        if not (_SAFE_NAME.fullmatch(kind) and _SAFE_NAME.fullmatch(key)):
            raise ValueError(f"bad cache kind/key {kind!r}/{key!r}")
        return self.root / kind / f"{key}{self.SUFFIX}"

    def _unusable(self, exc: OSError | StorageError) -> None:
        _warn_once(("unusable", str(self.root.resolve())),
                   f"result cache {self.root} cannot be used ({type(exc).__name__}: {exc}; {free_space(self.root)}); "
                   f"going on without caching")

    def get(self, kind: str, key: str):
        path = self._path(kind, key)
        if (secret := self.secret()) is None:
            return None
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # unreadable, or a path component that is not a directory
            self._unusable(exc)
            return None
        try:
            return decode_entry(blob, kind, key, secret)
        except CacheEntryError as exc:
            if isinstance(exc, StaleEntryError):
                _warn_once(("stale", str(self.root.resolve())), f"result cache {self.root} holds entries of an "
                           f"earlier recipebench ({exc}); they are recomputed as they are needed")
            else:
                _warn_once(("entry", str(path.resolve())), f"cache entry {path} rejected ({exc}); recomputing")
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
            return None

    def put(self, kind: str, key: str, obj) -> bool:
        """Store ``obj``; False (after one warning per process) when it cannot be."""
        if not self.writable or (secret := self.secret()) is None:
            return False
        path = self._path(kind, key)
        try:
            blob = encode_entry(kind, key, obj, secret)
        except (TypeError, ValueError) as exc:
            _warn_once(("encode", kind, type(exc).__name__), f"not caching a {kind} entry: {exc}")
            return False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, blob, mode=0o666, sync=False)
        except (OSError, StorageError) as exc:
            self.writable = False
            self._unusable(exc)
            return False
        return True
