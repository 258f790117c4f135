"""Registries for bugs, detectors and pipelines: decorators, discovery, plugins.

Every entry registers itself where it is defined (``@register_bug``,
``@register_detector``, ``@register_pipeline``); the modules of a package are
discovered with :mod:`pkgutil`, third parties arrive through an entry-point group
(``recipebench.bugs`` ...) or a ``path/to/file.py:Name`` spec. No hand-kept lists.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")
PLUGIN_PREFIX = "recipebench_plugin_"  # module names given to file plugins (path/to/file.py:Name)
LISTED = 8  # an error line names at most this many choices; `recipebench list` has them all


class RegistryError(ValueError):
    """A bad registration or lookup; the message names the bad input and the choices."""


def _choices(valid: list[str], more: str) -> str:
    """``a, b, c`` for a few names; past :data:`LISTED`, the first ones and where the rest are."""
    if len(valid) <= LISTED:
        return ", ".join(valid)
    return f"{', '.join(valid[:LISTED])} and {len(valid) - LISTED} more ({more})"


def unknown_name_message(kind: str, name: str, valid: Iterable[str]) -> str:
    """One clear message for an unknown name, with the nearest valid match; a long
    catalog is not spelled out but pointed to (`recipebench list <kind>s`)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Valid {kind}s: {_choices(valid, f'`recipebench list {kind}s`') or 'none'}"


def describe(entry: object) -> str:
    """How a message names a registered object: ``package.module.Name``, or
    ``path/to/file.py:Name`` for a file plugin (never its internal module name)."""
    if not (isinstance(entry, type) or callable(entry)):
        text = repr(entry)
        return f"{type(entry).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
    module = getattr(entry, "__module__", None) or "?"
    name = getattr(entry, "__qualname__", None) or type(entry).__name__
    if module.startswith(PLUGIN_PREFIX):
        file = getattr(sys.modules.get(module), "__file__", None)
        return f"{file}:{name}" if file else name
    return f"{module}.{name}"


class Registry(Generic[T]):
    """Name -> entry mapping with validation, discovery and plugin loading."""

    def __init__(self, kind: str, package: str, group: str, validate: Callable[[object], str]):
        self.kind, self.package, self.group = kind, package, group
        self._validate = validate  # returns the entry's name or raises RegistryError
        self._entries: dict[str, T] = {}
        self._resolvers: list[Callable[[str], T | None]] = []  # names built on demand (generated pipelines)
        self._loaded = False

    def register(self, entry: T) -> T:
        name = self._validate(entry)
        old = self._entries.get(name)
        if old is not None and describe(old) != describe(entry):
            raise RegistryError(
                f"duplicate {self.kind} name '{name}': already registered by {describe(old)}, "
                f"again by {describe(entry)}"
            )
        self._entries[name] = entry
        return entry

    def load(self) -> "Registry[T]":
        """Import every module of the package and every installed entry point once."""
        if self._loaded:
            return self
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for info in sorted(pkgutil.walk_packages(pkg.__path__, prefix=f"{self.package}."), key=lambda m: m.name):
            if not info.name.endswith(".base"):
                importlib.import_module(info.name)
        for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
            try:
                self.register(ep.load())
            except RegistryError:
                raise
            except Exception as exc:  # a broken plugin must not take the run down silently
                raise RegistryError(
                    f"{self.kind} plugin '{ep.name}' ({ep.value}) failed to load: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
        return self

    def names(self) -> list[str]:
        """The registered names (not the names a resolver builds on demand: those are unbounded)."""
        return sorted(self.load()._entries)

    def add_resolver(self, resolver: Callable[[str], T | None]) -> None:
        """Serve a family of names without registering each: ``resolver(name)`` returns
        the entry for a name it builds (e.g. a generated pipeline ``pop_t0042``) or None.
        Registered names win; resolved names are not listed by :meth:`names`."""
        if resolver not in self._resolvers:
            self._resolvers.append(resolver)

    def _resolved(self, name: object) -> T | None:
        if not isinstance(name, str):
            return None
        for resolver in self._resolvers:
            entry = resolver(name)
            if entry is not None:
                return entry
        return None

    def __contains__(self, name: object) -> bool:
        return name in self.load()._entries or self._resolved(name) is not None

    def get(self, name: str) -> T:
        self.load()
        if name not in self._entries:
            entry = self._resolved(name)
            if entry is None:
                raise RegistryError(unknown_name_message(self.kind, name, self._entries))
            return entry
        return self._entries[name]

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]

    def load_path(self, spec: str) -> T:
        """Load and register ``path/to/file.py:Name``; returns the entry."""
        path, sep, attr = spec.rpartition(":")
        if not sep or not path.endswith(".py"):
            raise RegistryError(f"{self.kind} spec '{spec}' must look like path/to/file.py:Name")
        file = Path(path)
        if not file.is_file():
            raise RegistryError(f"{self.kind} file '{path}' does not exist")
        mod_name = f"{PLUGIN_PREFIX}{file.stem}_{abs(hash(str(file.resolve())))}"
        try:
            module_spec = importlib.util.spec_from_file_location(mod_name, file)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            module_spec.loader.exec_module(module)
        except RegistryError:
            raise
        except Exception as exc:
            raise RegistryError(f"cannot import {self.kind} file '{path}': {type(exc).__name__}: {exc}") from None
        if not hasattr(module, attr):
            close = difflib.get_close_matches(attr, self._defined(module), n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RegistryError(f"{path} has no {self.kind} named '{attr}'.{hint} {self._found(module)}")
        try:
            return self.register(getattr(module, attr))
        except RegistryError as exc:
            raise RegistryError(f"{exc}. {self._found(module)}") from None

    def _defined(self, module) -> list[str]:
        """Names of the entries ``module`` itself defines that this registry accepts
        (not the base class it imports, nor its helpers)."""
        return sorted(a for a, v in vars(module).items()
                      if not a.startswith("_") and getattr(v, "__module__", None) == module.__name__
                      and self._accepts(v))

    def _found(self, module) -> str:
        defined = self._defined(module)
        if not defined:
            return f"It defines no {self.kind}."
        return f"{self.kind.capitalize()}s defined there: {_choices(defined, 'see the file')}"

    def _accepts(self, entry: object) -> bool:
        try:
            self._validate(entry)
        except Exception:
            return False
        return True

    def resolve(self, spec: str) -> str:
        """A registered name, or a file spec loaded now; returns the registered name."""
        if ":" in spec and spec.split(":")[0].endswith(".py"):
            return self._validate(self.load().load_path(spec))
        self.get(spec)
        return spec


def validate_entry(entry: object, kind: str, base: type, fields: tuple, method: str) -> None:
    """Checks shared by every registered class: right base class, required fields
    present, the abstract ``method`` implemented, ``requires``/``excludes`` known."""
    from recipebench.harness.pipeline import CAPABILITIES

    if entry is base:
        raise RegistryError(f"{describe(base)} is the base class of every {kind}, not a {kind}: name its subclass")
    if not (isinstance(entry, type) and issubclass(entry, base)):
        raise RegistryError(f"{describe(entry)} is not a subclass of {base.__module__}.{base.__name__}")
    missing = [f for f in fields if getattr(entry, f, None) in (None, "")]
    if missing:
        raise RegistryError(f"{kind} class {entry.__name__} is missing required field(s): {', '.join(missing)}")
    if getattr(entry, method) is getattr(base, method):
        raise RegistryError(f"{kind} '{entry.name}' does not implement {method}()")
    unknown = sorted((set(entry.requires) | set(entry.excludes)) - set(CAPABILITIES))
    if unknown:
        raise RegistryError(f"{kind} '{entry.name}' requires unknown capabilities {unknown}; "
                            f"known: {sorted(CAPABILITIES)}")




def source_of(obj: object) -> str:
    """Source text of the module that defines ``obj`` (for cache keys)."""
    import inspect

    module = inspect.getmodule(obj)
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):
        return repr(obj)
