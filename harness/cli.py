"""Command line: parses arguments and dispatches; the work lives in runner/report.

Exit codes (README, "Exit codes"): 0 every cell computed; 1 an internal error (a bug
in recipebench: traceback); 2 bad input, refused before anything trains; 3 the run
finished but some cells are ``error`` or ``timeout``; 4 ``report`` of an unfinished
run (without ``--allow-partial``); 5 a write failed (disk full, read-only): finished
rows are kept, ``--resume`` continues; 130 Ctrl-C and 143 SIGTERM: workers stopped,
finished rows kept."""
from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import math
import os
import shlex
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from recipebench.harness.diskio import StorageError, atomic_write, storage_error
from recipebench.harness.registry import RegistryError

# Nothing heavy is imported at module level: `--help`, `list` and a bad name answer in
# well under a second (torch, pandas and the registry modules cost 5-7 s on 2 cores).
# The registries are imported on first use; `list` and name checks read the catalog
# index (harness/catalog.py) instead while it is fresh.

DEFAULT_SEEDS = 5
MAX_SEEDS = 1000  # a run plans every (pipeline, variant, seed) up front; beyond this it is a typo
DEFAULT_WORKERS = 2
MAX_WORKERS = 256
DEFAULT_TIMEOUT = 120.0
MAX_TIMEOUT = 86400.0
DEFAULT_OUT = "reports"  # only for the default matrix; a partial selection goes under --cache-dir
DEFAULT_CACHE = ".recipebench_cache"
NO_BUGS = "none"  # --bugs none: clean runs only
REGISTRY_MODULES = ("recipebench.bugs.base", "recipebench.detectors.base", "recipebench.harness.pipeline")
MARKER = ".recipebench"  # written into an output directory recipebench claims
EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILED_CELLS, EXIT_UNFINISHED, EXIT_STORAGE = 0, 2, 3, 4, 5
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as a shell reports them
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away
UNWRITABLE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


class _Lazy:
    """A registry imported on first use (``PIPELINES``, ``BUGS``, ``DETECTORS``): importing
    one imports torch and every module of its package, which only the commands that
    need the entries themselves pay for."""

    def __init__(self, module: str, attr: str):
        self._where = (module, attr)

    def _target(self):
        import importlib

        module, attr = self._where
        return getattr(importlib.import_module(module), attr)

    def __getattr__(self, name: str):
        return getattr(self._target(), name)

    def __contains__(self, name: object) -> bool:
        return name in self._target()

    def __repr__(self) -> str:
        return f"<lazy {'.'.join(self._where)}>"


PIPELINES = _Lazy("recipebench.harness.pipeline", "PIPELINES")
BUGS = _Lazy("recipebench.bugs.base", "BUGS")
DETECTORS = _Lazy("recipebench.detectors.base", "DETECTORS")
REGISTRIES = {"pipeline": PIPELINES, "bug": BUGS, "detector": DETECTORS}


def parse_variant(variant: str) -> tuple[str, str | None]:
    """``"bug@severity"`` -> (bug, severity), as :func:`recipebench.bugs.base.parse_variant`
    (kept here so that a name is checked without importing the bug registry)."""
    name, _, sev = variant.partition("@")
    return name, sev or None


def _controls(bugs=BUGS) -> list[str]:
    """Registered negative controls (:func:`recipebench.bugs.base.controls`)."""
    return [n for n, c in bugs.items() if c.control]


def _full(cache_dir: str | None = None, key: str | None = None) -> dict:
    """Import and load every registry; when this process imports them now and
    ``cache_dir`` is given, refresh the catalog index there. ``key`` is the index key
    computed before the import (by :func:`_fast`), else it is computed here, before
    the import too: a source file changed during the import then leaves the index
    stale, never fresh with old names. A process that had imported the registries
    before (a test calling :func:`main`) writes no index: its entries may predate
    the files."""
    from recipebench.harness import catalog

    first = not any(m in sys.modules for m in REGISTRY_MODULES)
    if first and cache_dir is not None and key is None:
        key = catalog.key()
    registries = {kind: registry.load() for kind, registry in REGISTRIES.items()}
    if first and cache_dir is not None and catalog.stored_key(cache_dir) != key:
        catalog.write(cache_dir, key, catalog.build(registries, list_row))
    return registries


def _fast(args) -> dict | None:
    """kind -> :class:`~recipebench.harness.catalog.View` from a fresh catalog index in
    ``--cache-dir``, or None (missing or stale: the registries are imported instead).
    Leaves the key it computed on ``args`` for :func:`_full`."""
    from recipebench.harness import catalog

    cache_dir = getattr(args, "cache_dir", None)
    if cache_dir is None:
        return None
    index, args.catalog_key = catalog.read(cache_dir)
    return {kind: catalog.View(kind, index[kind]) for kind in catalog.KINDS} if index else None


def _precheck(args, validate) -> None:
    """``validate(registries)`` against the catalog index while it is fresh: a bad name
    or an empty selection is reported without importing torch, with the message the
    registries give. What the index cannot decide (a ``file.py:Name`` plugin, a name a
    resolver may serve, an unknown severity) and a missing or stale index leave the
    whole check to the imported registries, which run it again in any case."""
    from recipebench.harness.catalog import Defer

    views = _fast(args)
    if views is None:
        return
    try:
        validate(views)
    except Defer:
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: workers stopped, finished rows kept, resume hint."""


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line (``recipebench: error: ...``, exit 2), like every other bad input."""

    def error(self, message: str):
        raise RegistryError(f"{message} (see `{self.prog} --help`)")


def _int_in(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {value}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not 0 < value <= MAX_TIMEOUT:  # also rejects nan; 0 is not "no timeout"
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_TIMEOUT:g} seconds, got {text}")
    return value


def _names(value: str | None, registry, allow_severity: bool = False, flag: str | None = None) -> tuple:
    """Comma-separated names (or file.py:Name plugin specs) validated against a registry."""
    if value is None:  # the default catalog: every entry but peer tools, opt-in detectors and negative controls
        return tuple(n for n in registry.names()
                     if not getattr(registry.get(n), "peer", False) and getattr(registry.get(n), "in_default_run", True)
                     and not getattr(registry.get(n), "control", False))
    out = []
    for item in filter(None, (s.strip() for s in value.split(","))):
        name, severity = parse_variant(item) if allow_severity and ".py:" not in item else (item, None)
        resolved = registry.resolve(name)
        if severity is not None:
            registry.get(resolved)(severity)  # validates the severity name
        out.append(f"{resolved}@{severity}" if severity else resolved)
    if not out:
        hint = f" (or --bugs {NO_BUGS} for clean runs only)" if registry.kind == "bug" else ""
        raise RegistryError(f"{flag or 'the selection'} '{value}' selects no {registry.kind}; name at least one, "
                            f"see `recipebench list {registry.kind}s`{hint}")
    return tuple(dict.fromkeys(out))


def _variants(value: str | None, flag: str = "--bugs", bugs=BUGS) -> tuple:
    """Bug variants of ``--bugs``; ``none`` alone selects no bug (clean runs only)."""
    items = [s.strip() for s in (value or "").split(",")]
    if NO_BUGS in items:
        if len(items) > 1:
            raise RegistryError(f"{flag} {NO_BUGS} means clean runs only; it cannot be combined with bug names")
        return ()
    return _names(value, bugs, allow_severity=True, flag=flag)


def _abs_spec(spec: str) -> str:
    """``path/to/file.py:Name`` with an absolute path, so that `report` and `--resume`
    find the file again from any directory."""
    path, _, attr = spec.rpartition(":")
    return f"{Path(path).expanduser().resolve()}:{attr}"


def _plugins(args) -> tuple:
    specs = []
    for kind, attrs in (("pipeline", ("pipelines",)), ("bug", ("bugs", "bug")), ("detector", ("detectors", "detector"))):
        for value in (getattr(args, a, None) for a in attrs):
            specs += [(kind, _abs_spec(s.strip())) for s in (value or "").split(",") if ".py:" in s]
    return tuple(dict.fromkeys(specs))


def _load_recorded_plugins(saved: dict, db: Path) -> None:
    """Register the file plugins a recorded run used, so its rows can be rendered or resumed."""
    for kind, spec in saved.get("plugins") or ():
        path = spec.rpartition(":")[0]
        if not Path(path).is_file():
            raise RegistryError(f"the run recorded in {db} uses the {kind} plugin '{spec}', but the file {path} "
                                f"no longer exists; put it back to render or resume this run")
        REGISTRIES[kind].load_path(spec)


def _check_runnable(config) -> None:
    """Before any training, in the parent: build every selected pipeline, train one step
    of each plugin pipeline (its ``build_model`` and train step), instantiate every bug
    variant and apply it to every pipeline it applies to (it must return a Pipeline).
    A broken plugin is one clear error; a selection whose bugs apply to none of its
    pipelines is an error too (it would silently run clean seeds only). Plugin code run
    here stops after ``config.timeout`` seconds."""
    from recipebench.bugs.base import make_variant
    from recipebench.harness.pipeline import Pipeline

    built = _build(config.pipelines)
    for name, pipeline in built.items():
        if _is_plugin(PIPELINES.get(name)):
            _dry_step(name, pipeline, config.timeout)
    applicable = 0
    for variant in config.variants:
        name, severity = parse_variant(variant)
        where = f"bug '{variant}' ({_source_file(BUGS.get(name))})"
        try:
            bug = BUGS.get(name)(severity)
            targets = {n: p for n, p in built.items() if bug.applies_to(p)}
        except RegistryError:
            raise
        except Exception as exc:
            raise RegistryError(f"{where} failed: {type(exc).__name__}: {exc}") from None
        for pname, pipeline in targets.items():
            try:
                with _time_limit(config.timeout, f"{where}: apply() on pipeline '{pname}'"):
                    applied = make_variant(pipeline, variant)
            except RegistryError:
                raise
            except Exception as exc:
                raise RegistryError(f"{where}: apply() on pipeline '{pname}' raised {type(exc).__name__}: {exc}"
                                    ) from None
            if not isinstance(applied, Pipeline):
                raise RegistryError(f"{where}: apply() on pipeline '{pname}' returned {type(applied).__name__}, "
                                    f"expected a Pipeline (return p.replace(seam=...))")
        applicable += len(targets)
    if config.variants and not applicable:
        raise RegistryError(f"none of the selected bugs ({', '.join(config.variants)}) applies to the selected "
                            f"pipelines ({', '.join(config.pipelines)}); see the requires column of `recipebench list "
                            f"bugs`, or pass --bugs {NO_BUGS} for clean runs only")


def _is_plugin(obj) -> bool:
    """Whether ``obj`` comes from outside the recipebench package (a file plugin or an
    entry point); the package's own pipelines are tested by its suite."""
    return not (getattr(obj, "__module__", None) or "").startswith("recipebench.")


class _Expired(BaseException):
    """Plugin code run for validation overran its time (a BaseException: plugin code
    catching ``Exception`` cannot swallow it)."""


@contextmanager
def _time_limit(seconds: float, what: str):
    """Raise a one-line :class:`RegistryError` when the block runs past ``seconds``
    (SIGALRM, main thread only); an alarm armed before is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise _Expired()

    previous = signal.signal(signal.SIGALRM, expired)
    outer, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    except _Expired:
        raise RegistryError(f"{what} did not finish within {seconds:g}s (--timeout)") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3), interval)


def _dry_step(name: str, pipeline, timeout: float) -> None:
    """Load the data, build the model and train one step of a plugin pipeline, the
    way a run will; a failure is one line naming the seam that failed."""
    from recipebench.harness.trace import batches, prepare, seed_everything, steps_per_epoch, train

    where = f"pipeline '{name}' ({_source_file(PIPELINES.get(name))})"
    stage = "loading its data"
    try:
        with _time_limit(timeout, f"{where}: one training step"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prep = prepare.__wrapped__(pipeline)  # not kept in the parent's cache
            seed_everything(0)
            stage = "build_model()"
            model = pipeline.build_model(pipeline)
            stage = "one training step"
            train(pipeline, model, batches(pipeline, prep, 0), 1, steps_per_epoch(pipeline, prep))
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(f"{where}: {stage} raised {type(exc).__name__}: {exc}") from None


def _source_file(obj) -> str:
    import inspect

    try:
        return inspect.getsourcefile(obj) or "?"
    except TypeError:
        return "?"


def _writable_dir(path: Path, flag: str) -> None:
    """Create ``path`` when missing and check that files can be written into it."""
    if path.exists() and not path.is_dir():
        raise RegistryError(f"{flag} {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        if exc.errno in UNWRITABLE:
            raise storage_error(path, exc) from None
        raise RegistryError(f"{flag} {path} is not a writable directory: {exc.strerror or exc}") from None


def _claim(out: Path, force: bool) -> None:
    """An output directory is recipebench's or refused: one holding the marker or a
    results database is used, an empty or new one gets the marker, any other one
    (another tool's files) is refused unless ``force``."""
    if (out / MARKER).exists() or (out / "results.sqlite").exists():
        return
    entries = sorted(p.name for p in out.iterdir())
    if entries and not force:
        raise RegistryError(f"--out {out} is not empty and holds no recipebench run (no {MARKER} or results.sqlite; "
                            f"it holds {_short(entries)}); choose a new or empty directory, or pass --force to write "
                            f"into it (files of the same names are replaced)")
    atomic_write(out / MARKER, "recipebench output directory: results.sqlite and the reports rendered from it\n")


@contextmanager
def _locked(out: Path):
    """Hold ``out/.lock`` (flock, with this process's pid in it) while writing into
    ``out``: a second run on the same output directory refuses instead of mixing rows.
    The kernel drops the lock when the process ends, crashes included."""
    path = out / ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno in UNWRITABLE:
            raise storage_error(path, exc) from None
        raise RegistryError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RegistryError(f"another recipebench process (pid {holder}) is writing to {out} (lock {path}); "
                            f"wait for it to finish or choose another --out") from None
    except OSError as exc:
        os.close(fd)
        raise RegistryError(f"cannot lock {path}: {exc.strerror or exc}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _recorded(db: Path) -> tuple[dict | None, int]:
    """(meta, number of verdict rows) of a results database, opened read-only (nothing
    moved or created); one clear error when it is damaged."""
    try:
        con = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            (problem,) = con.execute("PRAGMA quick_check").fetchone()
            if problem != "ok":
                raise sqlite3.DatabaseError(problem)
            tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"meta", "verdicts"} <= tables:
                raise RegistryError(f"{db} is not a recipebench results database (no meta and verdicts tables)")
            meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
            (rows,) = con.execute("SELECT count(*) FROM verdicts").fetchone()
        finally:
            con.close()
    except RegistryError:
        raise
    except (sqlite3.Error, ValueError) as exc:  # ValueError: a meta value that is not JSON
        problem = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise RegistryError(f"results database {db} is damaged ({problem}); "
                            f"`recipebench run --out {db.parent}` moves it aside and recomputes") from None
    return meta, rows


def _execute(config, out: Path, args, html: bool = True) -> dict:
    """Run ``config`` into ``out`` (results database + reports); returns the tables.
    Checks the directories and takes the output lock before anything trains."""
    from recipebench.harness.report import provenance, write_reports
    from recipebench.harness.runner import run_matrix
    from recipebench.harness.store import Store

    _writable_dir(Path(args.cache_dir), "--cache-dir")  # first: the default --out may lie under it
    _writable_dir(out, "--out")
    _claim(out, getattr(args, "force", False))
    resume = f"recipebench run --resume --out {shlex.quote(str(out))}"
    with _locked(out):
        print(f"output directory: {out}", flush=True)
        store = None
        try:
            store = Store(out / "results.sqlite")
            store.set_meta(config=config.__dict__, provenance=provenance(),
                           command="recipebench " + " ".join(shlex.quote(a) for a in args.argv))
            _warn_seeds(config)  # every input checked, the directory and its database held: the run starts
            run_matrix(config, store, args.cache_dir, progress=not args.quiet)
            tables = write_reports(store, out, html=html)
            tables["verdicts"], tables["runs"] = store.verdicts(), store.runs()
        except KeyboardInterrupt as exc:
            raise type(exc)(resume) from None
        except StorageError as exc:
            raise StorageError(f"{exc}; finished cells are kept in {out / 'results.sqlite'}: free some space, then "
                               f"`{resume}`") from None
        finally:
            if store is not None:
                store.close()
    return tables


def _config(args, pipelines: tuple, variants: tuple, detectors: tuple, seeds: tuple | None = None):
    from recipebench.harness.runner import Config

    extra = {}
    if getattr(args, "keep_failures", False) and "keep_failures" in {f.name for f in fields(Config)}:
        extra["keep_failures"] = True
    return Config(pipelines=pipelines, variants=variants, detectors=detectors,
                  seeds=seeds if seeds is not None else tuple(range(args.seeds)),
                  workers=args.workers, timeout=args.timeout, plugins=_plugins(args),
                  executor=getattr(args, "executor", "local"), address=getattr(args, "address", None), **extra)


SELECTION = (("pipelines", "--pipelines"), ("variants", "--bugs/--sweep"), ("detectors", "--detectors/--with-peers"),
             ("seeds", "--seeds"))


def _selection(args, base: dict | None = None, registries: dict = REGISTRIES) -> dict:
    """What ``run`` selects: every flag given is resolved (unknown names are errors); a flag
    not given takes ``base``'s value (the recorded run on --resume) or the default catalog.
    ``registries``: the imported ones, or the catalog index's views (:func:`_precheck`)."""
    def pick(given, field: str, resolve):
        return resolve() if given is not None or base is None else tuple(base.get(field) or ())

    bugs, detector_registry = registries["bug"], registries["detector"]
    pipelines = pick(args.pipelines, "pipelines",
                     lambda: _names(args.pipelines, registries["pipeline"], flag="--pipelines"))
    variants = pick(args.bugs, "variants", lambda: _variants(args.bugs, bugs=bugs))
    if args.sweep:
        variants = _sweep(variants, bugs)
    if getattr(args, "suite", "default") == "full":  # the whole zoo with its negative controls
        variants += tuple(n for n in _controls(bugs) if n not in variants)
    detectors = pick(args.detectors, "detectors",
                     lambda: _names(args.detectors, detector_registry, flag="--detectors"))
    if args.with_peers:
        detectors += tuple(n for n, c in detector_registry.items()
                           if getattr(c, "peer", False) and n not in detectors)
    seeds = pick(args.seeds, "seeds", lambda: tuple(range(DEFAULT_SEEDS if args.seeds is None else args.seeds)))
    return dict(pipelines=pipelines, variants=variants, detectors=detectors, seeds=seeds)


def _default_out(selection: dict, plugins: tuple, cache_dir: str) -> Path:
    """``reports/`` for the default matrix (the committed report); any other selection
    gets its own directory, ``<cache-dir>/matrices/<digest of the selection>/``."""
    default = dict(pipelines=_names(None, PIPELINES), variants=_names(None, BUGS), detectors=_names(None, DETECTORS),
                   seeds=tuple(range(DEFAULT_SEEDS)))
    if not plugins and all(set(selection[k]) == set(default[k]) for k in default):
        return Path(DEFAULT_OUT)
    full = dict(default, variants=default["variants"] + tuple(_controls()))
    if not plugins and all(set(selection[k]) == set(full[k]) for k in full):
        return Path(DEFAULT_OUT) / "full"
    key = json.dumps([sorted(map(str, selection[k])) for k, _ in SELECTION] + [sorted(map(list, plugins))])
    return Path(cache_dir) / "matrices" / hashlib.sha256(key.encode()).hexdigest()[:12]


def _short(values) -> str:
    values = [str(v) for v in values]
    return ", ".join(values[:6]) + (f" and {len(values) - 6} more" if len(values) > 6 else "") if values else "none"


def _resume_config(args, out: Path, derived: bool = False):
    """The configuration recorded in ``out``; a selection flag that differs from it is
    refused (a resumed run finishes what it started). ``--workers``, ``--timeout``,
    ``--executor``, ``--address`` and ``--keep-failures`` apply to the continuation."""
    from recipebench.harness.runner import Config

    db = out / "results.sqlite"
    if not db.is_file():
        hint = " (the directory these flags select by default; name the run's directory with --out)" if derived else ""
        raise RegistryError(f"--resume: there is no {db} holding an earlier run to resume{hint}")
    saved = _recorded(db)[0].get("config")
    if not saved:
        raise RegistryError(f"--resume: {db} holds no earlier run to resume")
    _load_recorded_plugins(saved, db)
    wanted = _selection(args, saved)
    changed = [f"{flag} (recorded: {len(saved.get(field) or ()) if field == 'seeds' else _short(saved.get(field) or ())})"
               for field, flag in SELECTION if set(wanted[field]) != set(saved.get(field) or ())]
    if changed:
        raise RegistryError(f"--resume continues the run recorded in {db} as it was selected; these flags differ "
                            f"from it: {'; '.join(changed)}. Drop them, or start a new run without --resume")
    names = {f.name for f in fields(Config)}
    values = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
              for k, v in saved.items() if k in names}
    for field in ("workers", "timeout", "executor", "address"):
        if getattr(args, field, None) is not None:
            values[field] = getattr(args, field)
    if args.keep_failures and "keep_failures" in names:
        values["keep_failures"] = True
    return Config(**values)


def cmd_run(args) -> int:
    if getattr(args, "suite", None) == "population":  # generated draws: harness/population/command.py
        from recipebench.harness.population.command import cmd_population

        return cmd_population(args)
    out = Path(args.out) if args.out else None
    if not args.resume:  # a resumed run loads its recorded plugins before its flags are read
        _precheck(args, lambda registries: _selection(args, registries=registries))
    _full(args.cache_dir, getattr(args, "catalog_key", None))
    if args.resume:
        derived = out is None
        out = out or _default_out(_selection(args), _plugins(args), args.cache_dir)
        config = _resume_config(args, out, derived)
    else:
        args.seeds = DEFAULT_SEEDS if args.seeds is None else args.seeds
        args.workers = DEFAULT_WORKERS if args.workers is None else args.workers
        args.timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
        args.executor = args.executor or "local"
        selection = _selection(args)
        out = out or _default_out(selection, _plugins(args), args.cache_dir)
        config = _config(args, **selection)
    _check_runnable(config)
    start = time.perf_counter()
    tables = _execute(config, out, args)
    from tabulate import tabulate

    from recipebench.harness.validity import suite_lines

    failed = tables["failed"]
    columns = ["detector", "caught", "applicable", "max_fp_rate"] + (["errors"] if failed else [])
    rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in tables["detectors"][columns].to_dict("records")]
    print(tabulate(rows, headers="keys", tablefmt="simple", floatfmt=".2f", missingval="-"))
    print("\nOne run, every recipe detector (false alarm on legitimate runs, detection on harmful-or-latent bug "
          "runs):\n" + "\n".join(f"  {line}" for line in suite_lines(tables["suite"])))
    print(f"\n{len(tables['cells'])} cells in {time.perf_counter() - start:.1f}s; wrote {out}/ "
          f"(matrix.md, matrix.html, cells.csv, impact.csv, detectors.csv, suite.csv, results.sqlite)")
    return _failure_summary(failed, out)


def fewest_seeds() -> int:
    """The smallest seed count at which a detector can be marked caught at all: every
    bug seed flagged and no clean seed flagged gives one-sided Fisher p below ALPHA
    (3/3 vs 0/3 gives p = 0.05, which is not below 0.05)."""
    from recipebench.harness.stats import ALPHA, fisher_greater

    n = 1
    while not fisher_greater(n, n, 0, n) < ALPHA:
        n += 1
    return n


def _warn_seeds(config) -> None:
    """One warning line before a run whose seed count can never mark a detector caught
    (the run still goes ahead: its rates and false-positive counts are still worth having)."""
    from recipebench.harness.stats import ALPHA, fisher_greater

    n, fewest = len(config.seeds), fewest_seeds()
    if not config.variants or n >= fewest:  # clean runs only: nothing to catch
        return
    print(f"recipebench: warning: {n} seed{'s' if n != 1 else ''} cannot mark any detector caught: even "
          f"{n}/{n} detections against 0/{n} on clean runs give one-sided Fisher p = "
          f"{fisher_greater(n, n, 0, n):.3g}, not below {ALPHA:g}; use --seeds {fewest} or more for detection "
          f"claims", file=sys.stderr, flush=True)


def _failure_summary(failed: dict, out: Path) -> int:
    """Print what failed (counts and the first messages) and return the exit code:
    :data:`EXIT_FAILED_CELLS` when a cell is ``error`` or ``timeout``, else 0."""
    if not failed:
        return EXIT_OK
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(failed["outcomes"].items()))
    runs = f"; {failed['runs']} of {failed['all_runs']} training runs failed" if failed["runs"] else ""
    print(f"\nFAILED: {failed['verdicts']} of {failed['all_verdicts']} detector results ({counts}){runs}. "
          f"First messages:")
    for where, message in failed["first"]:
        print(f"  {where}: {message}")
    print(f"A rerun into {out} retries them (--keep-failures keeps them); exit code {EXIT_FAILED_CELLS}.")
    return EXIT_FAILED_CELLS


def _sweep(variants: tuple, bugs=BUGS) -> tuple:
    swept = tuple(dict.fromkeys(f"{parse_variant(v)[0]}@{s}" for v in variants
                                for s in bugs.get(parse_variant(v)[0]).severities))
    if variants and not swept:
        with_levels = [n for n, c in bugs.items() if c.severities]
        raise RegistryError(f"--sweep: none of the selected bugs ({_short(variants)}) has severity levels; "
                            f"bugs with levels: {', '.join(with_levels)}")
    return swept


def _build(names) -> dict:
    """Every named pipeline built now; a factory that raises is one clear error."""
    from recipebench.harness.pipeline import get_pipeline

    built = {}
    for name in names:
        try:
            built[name] = get_pipeline(name)
        except RegistryError:
            raise
        except Exception as exc:
            raise RegistryError(f"pipeline '{name}' ({_source_file(PIPELINES.get(name))}) failed to build: "
                                f"{type(exc).__name__}: {exc}") from None
    return built


def cmd_check_bug(args) -> int:
    _precheck(args, lambda registries: (registries["bug"].resolve(args.bug),
                                        _names(args.pipelines, registries["pipeline"], flag="--pipelines")))
    _full(args.cache_dir, getattr(args, "catalog_key", None))
    name = BUGS.resolve(args.bug)
    cls = BUGS.get(name)
    pipelines = [n for n, p in _build(_names(args.pipelines, PIPELINES, flag="--pipelines")).items()
                 if cls().applies_to(p)]
    if not pipelines:
        offered = sorted({c for p in _build(PIPELINES.names()).values() for c in p.capabilities})
        raise RegistryError(f"bug '{name}' requires capabilities {sorted(cls.requires)}; no selected pipeline "
                            f"offers them all (capabilities offered: {', '.join(offered)})")
    variants = _sweep((name,)) if args.sweep else (name,)
    config = _config(args, tuple(pipelines), variants, _names(None, DETECTORS))
    _check_runnable(config)
    out = Path(args.out or Path(args.cache_dir) / "check-bug" / name)
    tables = _execute(config, out, args, html=False)  # the summary is the point; `recipebench report` draws html
    from recipebench.harness.evaluate import check_bug_text

    print(check_bug_text(name, tables["runs"], tables["cells"], tables["impact"]))
    print(f"\nfull matrix: {out / 'matrix.md'}")
    return _failure_summary(tables["failed"], out)


def cmd_eval_detector(args) -> int:
    _precheck(args, lambda registries: (registries["detector"].resolve(args.detector),
                                        _names(args.pipelines, registries["pipeline"], flag="--pipelines"),
                                        _variants(args.bugs, bugs=registries["bug"])))
    _full(args.cache_dir, getattr(args, "catalog_key", None))
    name = DETECTORS.resolve(args.detector)
    detectors = tuple(dict.fromkeys([*_names(None, DETECTORS), name]))
    pipeline_names = _names(args.pipelines, PIPELINES, flag="--pipelines")
    variants = _variants(args.bugs)  # every name checked before any pipeline is built
    config = _config(args, tuple(_build(pipeline_names)), variants, detectors)
    _check_runnable(config)
    out = Path(args.out or Path(args.cache_dir) / "eval-detector" / name)
    tables = _execute(config, out, args, html=False)
    from recipebench.harness.evaluate import BASELINE, eval_detector_text

    recipe = {d for d in detectors if not DETECTORS.get(d).peer and DETECTORS.get(d).in_default_run} - {BASELINE}
    print(eval_detector_text(name, tables["cells"], tables["verdicts"], args.holdout, tables["impact"], recipe))
    print(f"\nfull matrix: {out / 'matrix.md'}")
    return _failure_summary(tables["failed"], out)


def cmd_report(args) -> int:
    from recipebench.harness.report import write_reports
    from recipebench.harness.store import Store

    out = Path(args.out)
    db = out / "results.sqlite"
    aside = sorted(out.glob("results.corrupt*"), key=lambda p: p.stat().st_mtime) if out.is_dir() else []
    note = f" (a damaged database was moved aside to {aside[-1]})" if aside else ""
    if not db.is_file():
        raise RegistryError(f"no results database at {db}{note}; run `recipebench run --out {out}` first")
    with _locked(out):  # a run still writing here is named, not rendered half-way
        meta, rows = _recorded(db)
        if not meta.get("config"):
            raise RegistryError(f"{db} holds no recorded run{note}; run `recipebench run --out {out}` first")
        if not rows:
            raise RegistryError(f"{db} holds no finished cells yet; continue the run with "
                                f"`recipebench run --resume --out {out}`")
        _load_recorded_plugins(meta["config"], db)
        store = Store(db)
        try:
            tables = write_reports(store, out)
        except StorageError as exc:
            raise StorageError(f"{exc}; the results database is unchanged: free some space, then "
                               f"`recipebench report --out {shlex.quote(str(out))}`") from None
        finally:
            store.close()
    print(f"rendered {out}/ (matrix.md, matrix.html, cells.csv, impact.csv, detectors.csv)")
    done, planned = tables["progress"]
    if done < planned:
        print(f"UNFINISHED: {done} of {planned} jobs done; the reports are marked as such. Finish the run with "
              f"`recipebench run --resume --out {shlex.quote(str(out))}`"
              + ("" if args.allow_partial else f" (exit code {EXIT_UNFINISHED}; --allow-partial accepts it)"))
        if not args.allow_partial:
            return EXIT_UNFINISHED
    return _failure_summary(tables["failed"], out)


LISTS = {"bugs": "bug", "detectors": "detector", "pipelines": "pipeline"}  # `list WHAT` -> registry kind


def list_row(kind: str, name: str, entry) -> dict:
    """The ``recipebench list`` row of one registered entry (also what the catalog index keeps)."""
    if kind == "bug":
        return dict(name=name, family=entry.family, split=entry.split, recipe_step=entry.recipe_step,
                    requires=",".join(sorted(entry.requires)), severities=",".join(entry.severities),
                    description=entry.description, source=entry.source)
    if kind == "detector":
        return dict(name=name, stage=entry.stage, recipe_step=entry.recipe_step, kind=entry.kind, cost=entry.cost,
                    requires=",".join(sorted(entry.requires)), example_bug=entry.example_bug,
                    description=entry.description)
    from recipebench.harness.pipeline import get_pipeline

    p = get_pipeline(name)
    return dict(name=name, partition=p.partition, task=p.task, metric=p.metric,
                capabilities=",".join(sorted(p.capabilities)), steps=p.steps, description=p.description,
                source=p.source)


def list_rows(what: str) -> list[dict]:
    kind = LISTS[what]
    return [list_row(kind, n, entry) for n, entry in REGISTRIES[kind].items()]


def _csv(rows: list[dict]) -> str:
    """``rows`` as CSV, byte for byte what ``pandas.DataFrame(rows).to_csv(index=False,
    lineterminator="\\n")`` writes for them (pandas writes through the same csv module;
    None is an empty field), without importing pandas."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    writer.writerow(columns)
    writer.writerows([["" if r.get(c) is None else r.get(c) for c in columns] for r in rows])
    return buf.getvalue()


def cmd_list(args) -> int:
    views = _fast(args)
    if views is not None:
        rows = views[LISTS[args.what]].rows
    else:
        _full(args.cache_dir, getattr(args, "catalog_key", None))
        rows = list_rows(args.what)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        print(_csv(rows), end="")
    else:  # the terminal table: the columns that fit 100 characters; csv/json have everything
        from tabulate import tabulate

        shown = TABLE_COLUMNS[args.what]
        print(tabulate([{k: r.get(k) for k in shown} for r in rows], headers="keys", tablefmt="simple",
                       maxcolwidths=[None] * (len(shown) - 1) + [40]))
        print(f"({len(rows)} {args.what}; --format csv or json for every column: description, source, ...)")
    return 0


TABLE_COLUMNS = {"bugs": ("name", "family", "split", "requires"),
                 "detectors": ("name", "stage", "kind", "cost", "example_bug"),
                 "pipelines": ("name", "partition", "task", "metric", "steps")}


FORCE_HELP = ("write into a non-empty --out that holds no recipebench run (refused by default: another tool's "
              "files of the same names would be replaced)")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="recipebench", description="Benchmark of recipe detectors vs silent training bugs.")
    sub = ap.add_subparsers(dest="command", required=True)
    seeds_help = f"seeds per cell, 1 to {MAX_SEEDS} (default {DEFAULT_SEEDS})"
    workers_help = f"warm worker processes, 1 to {MAX_WORKERS} (default {DEFAULT_WORKERS})"
    timeout_help = (f"seconds per training run and per detector, more than 0 and at most {MAX_TIMEOUT:g} "
                    f"(default {DEFAULT_TIMEOUT:g})")
    run = sub.add_parser("run", help="run the detection matrix and write the reports")
    run.add_argument("--pipelines", help="comma-separated names or file.py:factory (default: all)")
    run.add_argument("--bugs", help="comma-separated bug names, name@severity or file.py:Class (default: all); "
                                    f"'{NO_BUGS}' for clean runs only")
    run.add_argument("--detectors", help="comma-separated detector names or file.py:Class (default: all)")
    run.add_argument("--seeds", type=_int_in(1, MAX_SEEDS), help=seeds_help)
    run.add_argument("--workers", type=_int_in(1, MAX_WORKERS), help=workers_help)
    run.add_argument("--timeout", type=_seconds, help=timeout_help)
    run.add_argument("--sweep", action="store_true", help="run every severity level of each bug")
    run.add_argument("--suite", choices=["default", "full", "population"], default="default",
                     help="full: also every negative control (legitimate variants, bugs/controls.py) -> reports/full/; "
                          "population: generated training setups, each clean and with one bug -> reports/population/")
    run.add_argument("--draws", type=_int_in(1, 100000),
                     help="--suite population: admitted draws to run (default 300)")
    run.add_argument("--side", choices=["test", "calibration"], default="test",
                     help="--suite population: test draws (held out: -> reports/population/) or calibration draws "
                          "(-> reports/population_calibration/)")
    run.add_argument("--with-peers", action="store_true", help="also score the wrapped peer tools (detectors/peers/)")
    run.add_argument("--executor", choices=["local", "ray"],
                     help="local process pool (default) or Ray tasks (pip install 'recipebench[ray]')")
    run.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    run.add_argument("--keep-failures", action="store_true",
                     help="keep error and timeout cells as they are instead of retrying them on a rerun")
    run.add_argument("--resume", action="store_true",
                     help="continue the run recorded in OUT/results.sqlite (its selection; selection flags that "
                          "differ from it are refused)")
    run.add_argument("--out", help=f"output directory (default: {DEFAULT_OUT}/ for the default matrix, "
                                   "CACHE_DIR/matrices/<digest of the selection>/ for any other selection)")
    run.add_argument("--cache-dir", default=DEFAULT_CACHE, help=f"trace cache directory (default {DEFAULT_CACHE})")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--force", action="store_true", help=FORCE_HELP)
    run.set_defaults(fn=cmd_run)
    chk = sub.add_parser("check-bug", help="validate one bug and run it against every detector")
    chk.add_argument("bug", help="registered bug name or path/to/file.py:BugClass")
    chk.add_argument("--pipelines", "--pipeline", help="comma-separated pipelines (default: every applicable one)")
    chk.add_argument("--sweep", action="store_true", help="every severity level")
    ev = sub.add_parser("eval-detector", help="score one detector on the whole catalog beside the built-ins")
    ev.add_argument("detector", help="registered detector name or path/to/file.py:DetectorClass")
    ev.add_argument("--bugs", help=f"comma-separated bugs (default: the whole catalog; '{NO_BUGS}': clean runs only)")
    ev.add_argument("--pipelines", help="comma-separated pipelines (default: all; develop on the calibration ones, "
                                        "`recipebench list pipelines` shows each one's split)")
    ev.add_argument("--holdout", action="store_true",
                    help="also score leave-one-pipeline-out (threshold calibrated on the other pipelines)")
    for p, fn in ((chk, cmd_check_bug), (ev, cmd_eval_detector)):
        p.add_argument("--seeds", type=_int_in(1, MAX_SEEDS), default=DEFAULT_SEEDS, help=seeds_help)
        p.add_argument("--workers", type=_int_in(1, MAX_WORKERS), default=DEFAULT_WORKERS, help=workers_help)
        p.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, help=timeout_help)
        p.add_argument("--out", help="output directory (default: under --cache-dir)")
        p.add_argument("--cache-dir", default=DEFAULT_CACHE)
        p.add_argument("--quiet", action="store_true")
        p.add_argument("--force", action="store_true", help=FORCE_HELP)
        p.set_defaults(fn=fn)
    rep = sub.add_parser("report", help="re-render the reports from OUT/results.sqlite (no training)")
    rep.add_argument("--out", default=DEFAULT_OUT, help=f"the run's output directory (default {DEFAULT_OUT}/)")
    rep.add_argument("--allow-partial", action="store_true",
                     help=f"exit 0 for an unfinished run too (default: exit {EXIT_UNFINISHED}; the reports are "
                          f"marked unfinished either way)")
    rep.set_defaults(fn=cmd_report)
    ls = sub.add_parser("list", help="list bugs, detectors or pipelines")
    ls.add_argument("what", choices=["bugs", "detectors", "pipelines"])
    ls.add_argument("--format", choices=["table", "csv", "json"], default="table")
    ls.add_argument("--cache-dir", default=DEFAULT_CACHE,
                    help=f"where the catalog index is kept (default {DEFAULT_CACHE})")
    ls.set_defaults(fn=cmd_list)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Every bad input is one line on stderr (``recipebench: error: ...``) and exit code 2,
    found before anything trains."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
        args.argv = argv
        with warnings.catch_warnings(), _terminate_as_interrupt():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return args.fn(args)
    except RegistryError as exc:
        print(f"recipebench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageError as exc:
        print(f"recipebench: error: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    except KeyboardInterrupt as exc:
        resume = exc.args[0] if exc.args else "recipebench run --resume"
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"recipebench: {what}; workers stopped, finished cells are saved. Continue with `{resume}`.",
              file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:  # `recipebench list bugs | head`: the reader left, as with any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_BROKEN_PIPE


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, ``recipebench: warning: ...``, written above the progress
    bar (``tqdm.write`` clears the bar, writes, and redraws it) instead of into it."""
    from tqdm import tqdm

    kind = "" if category is UserWarning else f"{category.__name__}: "
    tqdm.write(f"recipebench: warning: {kind}{message}", file=sys.stderr)


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, so
    that it stops the workers and keeps what is written as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
