"""The catalog index: the names and ``recipebench list`` rows of every registered bug,
detector and pipeline, kept as JSON in the cache directory (``CACHE_DIR/catalog.json``)
so that ``recipebench list`` and a mistyped name answer without importing torch or
any registry module.

- **Written** after a command imported the registries (the slow path), keyed by a hash
  of the recipebench package's source files (``bugs/``, ``detectors/``, ``harness/``:
  the registry packages and the modules that validate them) and of the entry-point
  plugins' distributions (name, version, and the source files of each plugin's
  top-level module). Only the package's own entries and entry-point plugins are
  written, never a ``file.py:Name`` plugin.
- **Read** only when its key equals the key computed now; anything else (missing,
  stale, unreadable, malformed, or not authenticated) is ignored and the command
  imports the registries, which rewrites it. The index is plain JSON (nothing read
  from it runs code) behind an HMAC-SHA256 with the per-user secret of the result
  cache (harness/secret.py): whoever can write the cache directory but not read that
  secret cannot make ``list`` show forged rows or a valid name be refused.
- A :class:`View` answers what the index can answer (names, the default selection,
  severity names, ``list`` rows) and raises :class:`Defer` where only the imported
  registry can (a ``file.py:Name`` spec, a name a registry resolver might serve,
  an unknown severity): the caller then takes the slow path, so every message comes
  out as the imported registries give it.
"""
from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import re
from pathlib import Path

from recipebench.harness.registry import RegistryError, unknown_name_message

VERSION = 1  # bump when the index's shape changes
FILE = "catalog.json"
KINDS = ("pipeline", "bug", "detector")
GROUPS = {"pipeline": "recipebench.pipelines", "bug": "recipebench.bugs", "detector": "recipebench.detectors"}
PACKAGES = ("recipebench", "recipebench.bugs", "recipebench.detectors", "recipebench.harness")


class Defer(Exception):
    """The index cannot answer this exactly; import the registries and ask them."""


# ------------------------------------------------------------------------------ key

def _files(package: str) -> list[Path]:
    """The ``.py`` files of an importable package or module, found without running it
    (``find_spec`` of a dotted name imports only its parents: here ``recipebench``)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return sorted(p for d in spec.submodule_search_locations for p in Path(d).rglob("*.py"))
    return [Path(spec.origin)] if spec.origin and spec.origin.endswith(".py") else []


def _plugin_entries() -> list[tuple]:
    from importlib.metadata import entry_points

    out = []
    for kind in KINDS:
        for ep in sorted(entry_points(group=GROUPS[kind]), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            out.append((kind, ep.name, ep.value, getattr(dist, "name", None), getattr(dist, "version", None)))
    return out


def key() -> str:
    """Hash of what the registries' contents follow from: every source file of the
    recipebench package, and each entry-point plugin (its distribution and the source
    files of its top-level module). Reads files; imports nothing but ``recipebench``."""
    h = hashlib.sha256(f"recipebench-catalog/{VERSION}".encode())
    seen = set()
    plugins = _plugin_entries()
    roots = list(PACKAGES) + sorted({value.split(":")[0].split(".")[0] for _, _, value, _, _ in plugins})
    for root in roots:
        for path in _files(root):
            if path in seen:
                continue
            seen.add(path)
            try:
                data = path.read_bytes()
            except OSError:
                data = b"<unreadable>"
            h.update(f"\0{path}\0{len(data)}\0".encode())
            h.update(data)
    h.update(json.dumps(plugins).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------ write

def _indexed(registry, plugins: set[int]) -> list[tuple[str, object]]:
    """The registry's entries that a fresh process would register: the package's own
    and the entry-point plugins' (``plugins``: their ids), not file plugins or entries
    a test registered by hand."""
    out = []
    for name in sorted(registry._entries):
        entry = registry._entries[name]
        module = getattr(entry, "__module__", None) or ""
        if id(entry) in plugins or module.startswith("recipebench."):  # not recipebench_plugin_* (file.py:Name)
            out.append((name, entry))
    return out


def _pattern(resolver) -> str | None:
    """The regular expression of the names ``resolver`` may serve (its ``pattern``
    attribute, a string or compiled expression), or None when it declares none: then
    any name missing from the index may be the resolver's."""
    for obj in (resolver, getattr(resolver, "__wrapped__", None)):
        pattern = getattr(obj, "pattern", None)
        if isinstance(pattern, re.Pattern):
            pattern = pattern.pattern
        if isinstance(pattern, str):
            return pattern
    return None


def build(registries: dict, row) -> dict:
    """The index of loaded ``registries`` (kind -> Registry); ``row(kind, name, entry)``
    gives an entry's ``recipebench list`` row."""
    from importlib.metadata import entry_points

    plugins = set()
    for kind in KINDS:
        for ep in entry_points(group=GROUPS[kind]):
            try:
                plugins.add(id(ep.load()))  # already imported by Registry.load: a dictionary lookup
            except Exception:
                pass
    index = {"version": VERSION}
    for kind in KINDS:
        registry = registries[kind]
        entries = _indexed(registry, plugins)
        index[kind] = {
            "entries": {n: {"peer": bool(getattr(e, "peer", False)),
                            "in_default_run": bool(getattr(e, "in_default_run", True)),
                            "control": bool(getattr(e, "control", False)),
                            "severities": [str(s) for s in (getattr(e, "severities", None) or {})]}
                        for n, e in entries},
            "resolvers": [_pattern(r) for r in getattr(registry, "_resolvers", ())],
            "rows": [row(kind, n, e) for n, e in entries],
        }
    return index


def _mac(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, f"recipebench-catalog/{VERSION}\n".encode() + payload, hashlib.sha256).hexdigest()


def write(cache_dir: str | Path, index_key: str, index: dict) -> bool:
    """Write the index into ``cache_dir`` (created if missing), atomically: its MAC on
    the first line, the JSON on the second. A cache or key file that cannot be written
    is no error (the next command takes the slow path again)."""
    from recipebench.harness.diskio import StorageError, atomic_write
    from recipebench.harness.secret import cache_key_file, load_secret

    payload = json.dumps(dict(index, key=index_key)).encode()  # rows keep their column order
    try:
        secret = load_secret(cache_key_file())
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        atomic_write(Path(cache_dir) / FILE, _mac(secret, payload).encode() + b"\n" + payload)
    except (OSError, ValueError, StorageError):
        return False
    return True


# ------------------------------------------------------------------------------ read

def _valid(index: object) -> bool:
    """Whether ``index`` has the shape :func:`build` writes (checked before any use)."""
    if not isinstance(index, dict) or index.get("version") != VERSION or not isinstance(index.get("key"), str):
        return False
    for kind in KINDS:
        part = index.get(kind)
        if not isinstance(part, dict):
            return False
        entries, resolvers, rows = part.get("entries"), part.get("resolvers"), part.get("rows")
        if not (isinstance(entries, dict) and isinstance(resolvers, list) and isinstance(rows, list)):
            return False
        for e in entries.values():
            flags = ("peer", "in_default_run", "control")
            if not (isinstance(e, dict) and all(isinstance(e.get(f), bool) for f in flags)
                    and isinstance(e.get("severities"), list) and all(isinstance(s, str) for s in e["severities"])):
                return False
        if not all(r is None or isinstance(r, str) for r in resolvers):
            return False
        if not all(isinstance(r, dict) and r.get("name") in entries
                   and all(v is None or isinstance(v, (str, int, float)) for v in r.values()) for r in rows):
            return False
    return True


def _load(cache_dir: str | Path) -> dict | None:
    """The index in ``cache_dir`` when its MAC checks out and it is well formed."""
    from recipebench.harness.secret import cache_key_file, load_secret

    try:
        key_file = cache_key_file()
        if not key_file.is_file():  # no secret yet: no index can have been written with it
            return None
        mac, _, payload = (Path(cache_dir) / FILE).read_bytes().partition(b"\n")
        if not hmac.compare_digest(mac, _mac(load_secret(key_file), payload).encode()):
            return None
        index = json.loads(payload)
    except (OSError, ValueError):
        return None
    return index if _valid(index) else None


def stored_key(cache_dir: str | Path) -> str | None:
    """The key of the well-formed index in ``cache_dir``, None without one."""
    index = _load(cache_dir)
    return index["key"] if index else None


def read(cache_dir: str | Path) -> tuple[dict | None, str]:
    """(the index in ``cache_dir`` if it is well formed and its key is today's, else
    None; today's key)."""
    today = key()
    index = _load(cache_dir)
    return (index if index is not None and index["key"] == today else None), today


class Entry:
    """What the command line reads of a registered entry: the flags that select the
    default catalog and the severity names. Calling it with a severity (as a Bug class
    is called) checks the name; one the index does not know is left to the registry."""

    def __init__(self, name: str, data: dict):
        self.name = name
        self.peer, self.in_default_run, self.control = data["peer"], data["in_default_run"], data["control"]
        self.severities = dict.fromkeys(data["severities"])

    def __call__(self, severity: str | None = None) -> "Entry":
        if severity is not None and severity not in self.severities:
            raise Defer(f"severity '{severity}' of '{self.name}'")
        return self


class View:
    """A registry as the index recorded it, with the lookups the command line makes
    (``kind``, ``names``, ``get``, ``items``, ``resolve``, ``__contains__``)."""

    def __init__(self, kind: str, data: dict):
        self.kind = kind
        self._entries = {n: Entry(n, e) for n, e in data["entries"].items()}
        self._resolvers = list(data["resolvers"])
        self.rows = data["rows"]

    def _may_resolve(self, name: str) -> bool:
        for pattern in self._resolvers:
            try:
                if pattern is None or re.fullmatch(pattern, name):
                    return True
            except re.error:
                return True
        return False

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, Entry]]:
        return [(n, self._entries[n]) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        if isinstance(name, str) and self._may_resolve(name):
            raise Defer(f"{self.kind} '{name}' may be served by a resolver")
        return False

    def get(self, name: str) -> Entry:
        if name in self._entries:
            return self._entries[name]
        if self._may_resolve(name):
            raise Defer(f"{self.kind} '{name}' may be served by a resolver")
        raise RegistryError(unknown_name_message(self.kind, name, self._entries))

    def resolve(self, spec: str) -> str:
        if ":" in spec and spec.split(":")[0].endswith(".py"):  # a file plugin: only importing it can tell
            raise Defer(f"{self.kind} plugin '{spec}'")
        self.get(spec)
        return spec
