"""Run the detection matrix: plan jobs, execute them on warm workers, store results.

A *job* is one (pipeline, variant, seed): one instrumented training run (the trace,
cached on disk) shared by every detector scored on it. Clean runs are the baseline
and go first (phase 1); bug runs and the reference-reading detectors (``metric_drop``)
need the clean metrics and go second. Every finished job is written to the results
database at once, so an interrupted run resumes with ``--resume``.
"""
from __future__ import annotations

import json
import math
import operator
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import get_context

from tqdm import tqdm

from recipebench.bugs.base import BUGS, parse_variant
from recipebench.detectors.base import DETECTORS, Outcome, Verdict
from recipebench.harness.cache import ResultCache, code_key, core_key, digest
from recipebench.harness.pipeline import PIPELINES
from recipebench.harness.subject import Unreadable


@dataclass(frozen=True)
class Config:
    """What to run. Unknown names are rejected before anything starts."""

    pipelines: tuple
    variants: tuple  # bug names, optionally "name@severity"; "clean" is always added
    detectors: tuple
    seeds: tuple
    workers: int = 2
    timeout: float = 120.0  # seconds per trace and per detector
    plugins: tuple = ()  # "file.py:Name" specs to load in every worker
    executor: str = "local"  # "local" (process pool) or "ray"
    address: str | None = None  # Ray cluster address; None starts a local Ray instance
    keep_failures: bool = False  # True: error/timeout cells and failed runs count as done (not retried)


@dataclass(frozen=True)
class Job:
    pipeline: str
    variant: str
    seed: int
    trace_key: str
    detectors: tuple  # (name, verdict key) pairs still to compute
    record_run: bool
    reference: tuple | None = None


@dataclass
class JobResult:
    job: Job
    run: dict | None
    verdicts: list = field(default_factory=list)


class CellTimeout(BaseException):
    """Raised by the per-cell alarm; a BaseException so that plugin code catching
    ``Exception`` cannot swallow it."""


# ---------------------------------------------------------------- planning (parent)

ROW_VERSION = 3  # bump when the run or verdict rows change shape, so cached rows are recomputed

def variant_key(variant: str) -> str:
    name, severity = parse_variant(variant)
    return "clean" if name == "clean" else digest(code_key(BUGS.get(name)), severity)


def applicable_variants(config: Config, pipeline: str) -> list[str]:
    from recipebench.harness.pipeline import get_pipeline

    p = get_pipeline(pipeline)
    out = ["clean"]
    for v in config.variants:
        name, severity = parse_variant(v)
        if BUGS.get(name)(severity).applies_to(p):
            out.append(v)
    return out


def plan(config: Config, store, cache: ResultCache, phase: int, clean_metrics: dict | None = None,
         reference_pending: bool = False) -> list[Job]:
    """Jobs still to do for a phase. Rows already in the database with the same key
    are skipped, except failures (runs with an error, error and timeout cells), which
    are redone unless ``config.keep_failures``; rows found in the result cache are
    copied into the database. Clean runs without a finite metric (failed) are left out
    of the reference. ``reference_pending`` (phase 2, before phase 1 has trained the
    clean runs): the reference is not known yet, so every reference-reading detector
    counts as still to do; such a plan is for counting the jobs ahead, and is planned
    again once the clean metrics are in."""
    run_keys = store.run_keys(failed=config.keep_failures)
    verdict_keys = store.verdict_keys(failed=config.keep_failures)
    jobs = []
    for pname in config.pipelines:
        pkey = code_key(PIPELINES.get(pname))
        for variant in applicable_variants(config, pname):
            clean = variant == "clean"
            if phase == 1 and not clean:
                continue
            for seed in config.seeds:
                tkey = digest(core_key(), ROW_VERSION, pname, pkey, variant, variant_key(variant), seed)
                reference = None
                if phase == 2:
                    reference = tuple(float(m) for s, m in sorted((clean_metrics or {}).items())
                                      if s != seed and s in config.seeds and isinstance(m, (int, float))
                                      and math.isfinite(m))
                record_run = (phase == 1 or not clean) and run_keys.get((pname, variant, seed)) != tkey
                if record_run and (row := cache.get("runs", tkey)) is not None:
                    store.write(row, [])
                    record_run = False
                todo, found = [], []
                for d in config.detectors:
                    det = DETECTORS.get(d)
                    wanted = not det.needs_reference if phase == 1 else det.needs_reference or not clean
                    if not wanted:
                        continue
                    if reference_pending and det.needs_reference:
                        todo.append((d, None))
                        continue
                    vkey = digest(tkey, d, code_key(det), reference if det.needs_reference else None)
                    if verdict_keys.get((pname, variant, seed, d)) == vkey:
                        continue
                    if (row := cache.get("verdicts", vkey)) is not None:
                        found.append(row)
                    else:
                        todo.append((d, vkey))
                if found:
                    store.write(None, found)
                if record_run or todo:
                    jobs.append(Job(pname, variant, seed, tkey, tuple(todo), record_run, reference))
    # seed-major: the first jobs in flight belong to different pipelines, so per-pipeline
    # set-up that a detector caches (a peer's reference runs) is not awaited twice at once
    return sorted(jobs, key=lambda j: (config.seeds.index(j.seed), j.pipeline, j.variant))


# ----------------------------------------------------------------- workers (child)

_CACHE: ResultCache | None = None
_PROGRESS = None  # the pool's channel to the parent's watchdog: (token, stage, budget) as each stage starts
_TOKEN: int | None = None  # the parent's number for the job this worker is running


def init_worker(cache_dir: str, plugins: tuple, progress=None) -> None:
    """Warm worker: one torch thread, registries and plugins loaded once. ``progress``
    (a ``SimpleQueue``) receives the start of every stage of a job, for the watchdog."""
    global _CACHE, _PROGRESS
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it saves and stops
    exit_with_parent()
    warnings.simplefilter("ignore")  # runs record their own warnings; workers stay quiet
    _CACHE, _PROGRESS = ResultCache(cache_dir), progress
    os.environ["RECIPEBENCH_CACHE_DIR"] = str(cache_dir)  # where peers keep their own artefacts
    load_plugins(plugins)


def exit_with_parent(poll: float = 1.0) -> None:
    """A worker whose parent died (``kill -9``, the OOM killer) exits within ``poll``
    seconds instead of lingering as an orphan holding its memory."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(poll)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def load_plugins(plugins: tuple) -> None:
    PIPELINES.load(), BUGS.load(), DETECTORS.load()
    registries = {"bug": BUGS, "detector": DETECTORS, "pipeline": PIPELINES}
    for kind, spec in plugins:
        registries[kind].load_path(spec)


def _on_alarm(signum, frame):
    raise CellTimeout()


class deadline:
    """Raise :class:`CellTimeout` in this (worker main) thread after ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)


OUTPUT_KEEP = 4096  # bytes of a plugin's captured output kept from its start, and as many from its end
MESSAGE_KEEP = 2000  # characters of an error message kept
TIMED_OUT = "timed out"  # what _guarded returns for a stage its alarm stopped
HARNESS_BUDGET = 60.0  # seconds the harness's own code between two stages gets at least before the watchdog acts


def _clip(text: str, keep: int = MESSAGE_KEEP) -> str:
    if len(text) <= keep:
        return text
    return f"{text[:keep // 2]}\n[... {len(text) - keep} characters left out ...]\n{text[-keep // 2:]}"


def _describe(exc: BaseException, where: bool = True) -> str:
    """``Type: message (file:line)`` of an exception raised in plugin code, whose
    ``__str__`` is plugin code too."""
    try:
        text = str(exc)
    except BaseException:
        text = "(str() of the exception failed)"
    tb, where = where and exc.__traceback__, ""
    try:
        tb = traceback.extract_tb(tb) if tb else None
        if tb:
            where = f" ({os.path.basename(tb[-1].filename)}:{tb[-1].lineno})"
    except BaseException:
        pass
    return _clip(f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}")


def _repr(value) -> str:
    try:
        return _clip(repr(value), 200)
    except BaseException:
        return f"<{type(value).__name__}>"


class captured:
    """What the code inside writes to stdout and stderr, collected instead of printed.

    Redirected at the file-descriptor level (fds 1 and 2), not by swapping
    ``sys.stdout``: C and C++ code (torch's own warnings), ``os.write``, subprocesses
    and a plugin that replaces ``sys.stdout`` are caught too. A thread drains the pipe
    and keeps the first and the last ``OUTPUT_KEEP`` bytes, so a plugin that prints
    without end costs neither memory nor disk. After the block, ``text`` holds what
    was kept ("" when nothing was written). A child process that outlives the block
    (a persistent DataLoader worker) is not waited for: what it writes later is dropped."""

    def __init__(self):
        self.head, self.tail, self.total, self.text = bytearray(), bytearray(), 0, ""
        self._saved = None

    def __enter__(self):
        _flush(sys.stdout, sys.stderr)
        try:
            saved = os.dup(1), os.dup(2)
        except OSError:  # no stdout/stderr to redirect
            return self
        read, write = os.pipe()
        wake, self._wake = os.pipe()  # written to when the block is over
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        self._saved, self._streams, self._done = saved, (sys.stdout, sys.stderr), threading.Event()
        threading.Thread(target=self._drain, args=(read, wake), name="capture", daemon=True).start()
        return self

    def _keep(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = OUTPUT_KEEP - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail = (self.tail + chunk)[-OUTPUT_KEEP:]

    def _drain(self, fd: int, wake: int) -> None:
        import select

        poller = select.poll()  # not select(): no limit on the fd numbers a plugin's open files push us to
        poller.register(fd, select.POLLIN)
        poller.register(wake, select.POLLIN)
        try:
            while True:
                ready = {f for f, _ in poller.poll()}
                if fd in ready:
                    if not (chunk := os.read(fd, 1 << 16)):
                        return  # every writer closed the pipe
                    self._keep(chunk)
                elif wake in ready:  # the block is over: everything it wrote is in the pipe
                    os.set_blocking(fd, False)
                    try:
                        while chunk := os.read(fd, 1 << 16):
                            self._keep(chunk)
                        return
                    except BlockingIOError:  # drained, but a child process still holds the pipe
                        pass
                    self._done.set()
                    os.set_blocking(fd, True)
                    while os.read(fd, 1 << 16):  # ... and writes into the void until it exits
                        pass
                    return
        finally:
            self._done.set()
            os.close(fd)
            os.close(wake)

    def __exit__(self, *exc):
        if self._saved is None:
            return
        sys.stdout, sys.stderr = self._streams  # a plugin's replacement streams are dropped, not flushed
        _flush(sys.stdout, sys.stderr)  # what the plugin printed into Python's buffers goes into the pipe
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = None
        try:
            os.write(self._wake, b"x")
        except OSError:  # the reader already saw the end of the pipe and left
            pass
        os.close(self._wake)
        self._done.wait(timeout=5)
        left_out = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {left_out} bytes left out ...]\n" if left_out > 0 else ""
        self.text = bytes(self.head).decode(errors="replace") + middle + bytes(self.tail).decode(errors="replace")


def _flush(*streams) -> None:
    for stream in streams:
        try:
            stream.flush()
        except Exception:  # closed by a plugin, or None
            pass


def _stage(name: str, budget: float) -> None:
    """Tell the parent's watchdog that stage ``name`` of the current job starts and
    stops itself (its alarm) within ``budget`` seconds. Sent synchronously (no feeder
    thread) in one write of a few bytes, so it is in the pipe before the stage runs."""
    if _PROGRESS is not None and _TOKEN is not None:
        _PROGRESS.put((_TOKEN, name, float(budget)))


def _guarded(stage: str, seconds: float, fn, output: list):
    """Run ``fn()``, code that reaches into plugin code, as one stage of the job: reported
    to the watchdog, under the alarm, output captured into ``output``, every
    ``BaseException`` caught. Returns ``(value, None)``, ``(None, TIMED_OUT)`` or
    ``(None, message)``."""
    _stage(stage, seconds)
    out = captured()
    try:
        with out, deadline(seconds):
            return fn(), None
    except CellTimeout:
        return None, TIMED_OUT
    except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit too: plugin code raised them
        return None, _describe(exc)
    finally:
        if out.text:
            output.append(f"[{stage}]\n{out.text}")
        _stage("job", max(seconds, HARNESS_BUDGET))  # back in the harness's own code until the next stage


def detector_timeout(name: str, timeout: float) -> float:
    """Seconds one cell of detector ``name`` gets: ``timeout``, or its ``min_timeout``."""
    try:
        return max(float(timeout), float(DETECTORS.get(name).min_timeout))
    except Exception:
        return float(timeout)


def plain_verdict(verdict) -> Verdict:
    """``verdict`` as plain data (what pickles to the parent and goes into the database),
    or an error verdict naming what is wrong with it: the outcome must be an ``Outcome``,
    the score a number, ``steps`` an integer or None, and the evidence a dict whose values
    are JSON-serializable as they are or once converted by ``_plain`` (numpy and 0-d
    tensor scalars)."""
    from recipebench.detectors.base import _plain

    def bad(what: str) -> Verdict:
        return Verdict(Outcome.ERROR, evidence={"message": _clip(f"check() returned {what}")})

    if not isinstance(verdict, Verdict):
        return bad(f"{type(verdict).__name__}, expected Verdict")
    if not isinstance(verdict.outcome, Outcome):
        return bad(f"a Verdict whose outcome is {_repr(verdict.outcome)} ({type(verdict.outcome).__name__}), "
                   f"expected an Outcome (e.g. Outcome.FLAGGED)")
    try:
        score = float(verdict.score)
    except Exception as exc:
        return bad(f"a Verdict whose score ({type(verdict.score).__name__}) is not a number: {_describe(exc, False)}")
    try:
        steps = None if verdict.steps is None else operator.index(verdict.steps)
    except Exception:
        return bad(f"a Verdict whose steps ({type(verdict.steps).__name__}) is not an integer or None")
    if not isinstance(verdict.evidence, dict):
        return bad(f"a Verdict whose evidence is {type(verdict.evidence).__name__}, expected a dict")
    evidence = {}
    for key, value in verdict.evidence.items():
        try:
            json.dumps(value)
        except Exception:
            try:
                value = _plain(value)
                json.dumps(value)
            except Exception as exc:
                return bad(f"a Verdict whose evidence[{_repr(key)}] ({type(value).__name__}) is not "
                           f"JSON-serializable: {_describe(exc, False)}")
        evidence[key] = value
    try:  # the round trip leaves plain dicts, lists, strings and numbers only, as the database will hold them
        evidence = json.loads(json.dumps(evidence, sort_keys=True))
    except Exception as exc:
        return bad(f"a Verdict whose evidence is not JSON-serializable: {_describe(exc, False)}")
    return Verdict(verdict.outcome, score, evidence, steps)


def run_job(job: Job, timeout: float, stopped: tuple = ()) -> JobResult:
    """One job in a worker. Every stage that reaches plugin code (apply, training, each
    detector, each probe) runs through :func:`_guarded`: under its alarm, output
    captured, any ``BaseException`` caught, reported to the parent's watchdog.
    ``stopped`` holds ``(stage, message)`` pairs for stages the watchdog stopped from
    outside on an earlier attempt: they are recorded with the message, not run again.
    The result holds plain data only (strings, numbers, lists, dicts)."""
    from recipebench.bugs.base import make_variant
    from recipebench.harness.pipeline import get_pipeline
    from recipebench.harness.probes import applicable_probes
    from recipebench.harness.subject import Reference, Subject
    from recipebench.harness.trace import Trace, record

    stopped, output = dict(stopped), []
    trace = _CACHE.get("traces", job.trace_key) if _CACHE else None
    pipeline = None
    if "apply" in stopped:
        trace = Trace(error=f"apply() {stopped['apply']}")
    else:
        pipeline, problem = _guarded("apply", timeout, lambda: make_variant(get_pipeline(job.pipeline), job.variant),
                                     output)
        if problem == TIMED_OUT:
            trace = Trace(error=f"apply() timed out after {timeout:g}s")
        elif problem:
            trace = Trace(error=f"apply() raised {problem}")
    if trace is None and "training" in stopped:
        trace = Trace(error=f"training {stopped['training']}")
    elif trace is None:
        trace, problem = _guarded(
            "training", timeout,
            lambda: record(pipeline, job.seed, None if job.variant == "clean" else get_pipeline(job.pipeline)), output)
        if problem == TIMED_OUT:
            trace = Trace(error=f"training timed out after {timeout:g}s")
        elif problem:
            trace = Trace(error=f"training raised {problem}")
        if _CACHE and trace.error is None:
            _CACHE.put("traces", job.trace_key, trace)
    subject = Subject(pipeline, job.seed, trace, Reference(job.reference or ()))

    verdicts = []
    for name, vkey in job.detectors:
        t0 = time.perf_counter()
        if f"detector {name}" in stopped:
            verdict = Verdict(Outcome.TIMEOUT, evidence={"message": stopped[f"detector {name}"]})
        else:
            _stage(f"detector {name}", detector_timeout(name, timeout))
            verdict = check_one(name, subject, pipeline, trace, timeout)
            _stage("job", max(timeout, HARNESS_BUDGET))
        verdicts.append(dict(pipeline=job.pipeline, variant=job.variant, seed=job.seed, detector=name, key=vkey,
                             outcome=verdict.outcome.value, score=verdict.score, evidence=verdict.evidence,
                             steps=verdict.steps, seconds=round(time.perf_counter() - t0, 4)))

    run = None
    if job.record_run:  # after the detectors, so each pays for the experiments it shares with probes
        probes = {}
        if trace.error is None:
            for pr in applicable_probes(pipeline.capabilities):
                value, problem = (None, "stopped") if f"probe {pr.name}" in stopped else \
                    _guarded(f"probe {pr.name}", timeout, lambda: float(pr.fn(subject)), output)
                probes[pr.name] = math.nan if problem else value
        run = dict(pipeline=job.pipeline, variant=job.variant, seed=job.seed, key=job.trace_key,
                   metric=trace.metric, reported_metric=trace.reported_metric, silent=trace.silent, error=trace.error, warnings=trace.warnings,
                   probes=probes, seconds=round(trace.seconds, 4), curves=curves(trace))
        run["output"] = _clip("\n".join(output), 2 * OUTPUT_KEEP)  # what apply, training and the probes printed

    return JobResult(job, run, verdicts)


def _run_watched(token: int, job: Job, timeout: float, stopped: tuple = ()) -> JobResult:
    """What a pool worker runs: :func:`run_job` for the parent's job number ``token``
    (its stages are reported under it); nothing, not even a ``BaseException`` that
    escaped the guards, leaves as an exception."""
    global _TOKEN
    _TOKEN = token
    try:
        _stage("job", max(timeout, HARNESS_BUDGET))  # the harness's own preparation until the first stage
        return run_job(job, timeout, stopped)
    except BaseException as exc:
        return _crashed(job, f"job failed: {_describe(exc)}")
    finally:
        _TOKEN = None


def curves(trace, points: int = 60) -> dict:
    """What the report plots: loss per batch and LR per optimizer step, each at the
    batch it belongs to (thinned to about ``points`` values), per-channel input mean/std of the recorded batches, the share of
    fixed-batch predictions that changed since the previous snapshot, and the first
    layer's final weights when they are small conv filters."""
    import numpy as np

    stride, lr_stride = max(1, len(trace.loss) // points), max(1, len(trace.lr) // points)
    preds = np.asarray(trace.preds).reshape(len(trace.preds), -1) if trace.preds else np.zeros((0, 0))
    churn = [float((preds[i] != preds[i - 1]).mean()) for i in range(1, len(preds))]
    return {"step": list(range(0, len(trace.loss), stride)), "loss": [round(v, 5) for v in trace.loss[::stride]],
            "lr": [float(f"{v:.4g}") for v in trace.lr[::lr_stride]],
            "lr_step": trace.step_calls[::lr_stride],  # the batch of each optimizer step (accumulation: every k-th)
            "input_mean": [[round(v, 4) for v in m] for m in trace.input_mean],
            "input_std": [[round(v, 4) for v in m] for m in trace.input_std],
            "pred_steps": trace.pred_steps[1:], "pred_churn": [round(c, 4) for c in churn],
            "first_layer": trace.first_layer}


def check_one(name: str, subject, pipeline, trace, timeout: float) -> Verdict:
    """One detector on one subject; every failure becomes an error/timeout verdict.

    All the plugin's code (its construction, ``applies_to``, ``check`` and the
    conversion of its verdict to plain data by :func:`plain_verdict`) runs under the
    cell's alarm with its output captured into ``evidence["output"]``; any
    ``BaseException`` it raises (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``)
    becomes an error verdict with the message."""
    if pipeline is None or trace.error is not None:
        return Verdict(Outcome.ERROR, evidence={"message": f"training failed: {trace.error}"})
    timeout = detector_timeout(name, timeout)
    out = captured()
    try:
        with out, deadline(timeout):
            det = DETECTORS.get(name)()
            if det.applies_to(pipeline.capabilities):
                verdict = plain_verdict(det.check(subject))
            else:
                verdict = Verdict(Outcome.NOT_APPLICABLE)
    except CellTimeout:
        verdict = Verdict(Outcome.TIMEOUT, evidence={"message": f"detector exceeded {timeout:g}s"})
    except Unreadable as exc:  # a model or batch the check cannot read: legitimate code, not an error
        verdict = Verdict(Outcome.NOT_APPLICABLE, evidence={"reason": str(exc)})
    except BaseException as exc:
        verdict = Verdict(Outcome.ERROR, evidence={"message": _describe(exc)})
    if out.text:
        verdict.evidence["captured_output" if "output" in verdict.evidence else "output"] = out.text
    return verdict


# ---------------------------------------------------------------- execution (parent)

POLL = 0.2  # seconds between the watchdog's looks at its workers' progress (Ctrl-C interrupts the wait)
GRACE = 5.0  # seconds past a stage's own timeout before the watchdog stops it from outside


class _Pool:
    """A process pool of warm workers and the channel (a ``SimpleQueue``) on which they
    report the start of every stage of their jobs to the watchdog."""

    def __init__(self, workers: int, cache_dir: str, plugins: tuple):
        ctx = get_context("spawn")
        self.workers, self.progress, self.closed = workers, ctx.SimpleQueue(), False
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                                            initargs=(cache_dir, plugins, self.progress))

    def submit(self, token: int, job: Job, timeout: float, stopped: tuple):
        return self.executor.submit(_run_watched, token, job, timeout, stopped)

    def reports(self) -> list[tuple]:
        """``(token, stage, budget)`` for each stage started since the last call. Each
        report is one atomic write of a few bytes, so a worker killed mid-report leaves
        no half message behind."""
        out = []
        while not self.progress.empty():
            out.append(self.progress.get())
        return out

    def close(self, kill: bool = False) -> None:
        """Shut down; with ``kill``, SIGKILL the workers first (what they were doing is
        lost, nothing waits for them)."""
        if self.closed:
            return
        self.closed = True
        if kill:  # ProcessPoolExecutor has no public way to stop a running call
            for proc in list((getattr(self.executor, "_processes", None) or {}).values()):
                try:
                    proc.kill()
                except Exception:  # already gone
                    pass
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.progress.close()


class Executor:
    """Warm worker processes, watched from outside.

    - A job whose worker dies (``os._exit``, segfault, OOM kill) is re-run piece by piece
      (the run, then one detector at a time) on a one-worker pool, so only the piece that
      kills its worker becomes an error cell.
    - Watchdog: workers report the start of every stage of a job (apply, training, each
      detector, each probe) with its timeout. A stage still running ``GRACE`` seconds past
      its timeout (plugin code that swallows the in-worker alarm, or blocks signals) gets
      every worker of its pool killed and the pool replaced; its job is re-run with that
      stage recorded as a ``timeout`` cell ("stopped from outside after Ns") instead of
      run, and the pool's other unfinished jobs are re-submitted as they were. The
      isolation pool is watched the same way.
    - Ctrl-C, or any exception in the parent, kills every worker at once and propagates;
      each finished job is already in the database.
    """

    def __init__(self, config: Config, cache_dir: str):
        self.config, self.cache_dir = config, cache_dir
        self._pools: list[_Pool] = []  # live pools, all killed on Ctrl-C
        self._tokens = 0
        self.pool = self._open(config.workers)

    def _open(self, workers: int) -> _Pool:
        pool = _Pool(workers, self.cache_dir, self.config.plugins)
        self._pools.append(pool)
        return pool

    def _shut(self, pool: _Pool, kill: bool = False) -> None:
        if pool in self._pools:
            self._pools.remove(pool)
        pool.close(kill)

    def run(self, jobs: list[Job], on_result, progress: tqdm) -> None:
        try:
            self.pool, suspects = self._watch(self.pool, [(j, ()) for j in jobs], on_result, progress.update)
            if suspects:
                self._isolate(suspects, on_result)
                progress.update(len(suspects))
        except BaseException:  # Ctrl-C (or a failure in the parent): stop every worker now, keep what is written
            self.kill()
            raise

    def _isolate(self, suspects: list[tuple[Job, tuple]], on_result) -> None:
        """Re-run each job whose worker died piece by piece (the run, then one detector
        at a time) on a one-worker pool, so only the piece that kills its worker
        becomes an error cell; the pool is replaced after each death. Stages already
        stopped from outside stay stopped."""
        pieces = []
        for job, stopped in suspects:
            pieces.append((replace(job, detectors=()), stopped))
            pieces += [(replace(job, detectors=(d,), record_run=False), stopped) for d in job.detectors]
        solo = self._open(1)
        for piece in pieces:  # on an exception, run() kills solo with the other pools
            if not piece[0].detectors and not piece[0].record_run:
                continue
            solo, died = self._watch(solo, [piece], on_result, lambda: None)
            for job, _ in died:
                on_result(_crashed(job))
        self._shut(solo)

    def _watch(self, pool: _Pool, work: list[tuple[Job, tuple]], on_result, finished) -> tuple[_Pool, list]:
        """Run ``work``, ``(job, stages stopped from outside)`` pairs, on ``pool`` under
        the watchdog, calling ``on_result`` with each result and ``finished()`` after each
        job done. Returns the pool (a new one if it broke or was killed) and the work
        whose worker died, for :meth:`_isolate`."""
        timeout = self.config.timeout
        todo: dict[int, tuple[Job, tuple]] = {}  # token -> (job, stages stopped from outside)
        futures: dict = {}  # future -> token
        running: dict[int, tuple[str, float, float]] = {}  # token -> (stage, started, budget)
        suspects = []

        def submit(job: Job, stopped: tuple = ()) -> None:
            self._tokens += 1
            todo[self._tokens] = (job, stopped)
            futures[pool.submit(self._tokens, job, timeout, stopped)] = self._tokens

        def take(fut, token: int) -> None:
            job, stopped = todo.pop(token)
            running.pop(token, None)
            exc = fut.exception()  # the worker's exception, never a signal raised here
            if exc is None:
                on_result(fut.result())
                finished()
            elif isinstance(exc, BrokenProcessPool):
                suspects.append((job, stopped))
            else:  # a harness failure in one job must not stop the matrix
                on_result(_crashed(job, f"job failed: {type(exc).__name__}: {_clip(str(exc))}"))
                finished()

        for job, stopped in work:
            submit(job, stopped)
        while futures:
            done, _ = wait(futures, timeout=POLL, return_when=FIRST_COMPLETED)
            for fut in done:
                take(fut, futures.pop(fut))
            now = time.monotonic()
            for token, stage, budget in pool.reports():
                if token in todo:
                    running[token] = (stage, now, budget)
            late = {token: (stage, now - started, budget) for token, (stage, started, budget) in running.items()
                    if now - started > budget + GRACE}
            if not late:
                continue
            self._shut(pool, kill=True)  # the only way to stop code that ignores its alarm
            pool = self._open(pool.workers)
            running.clear()
            for fut, token in list(futures.items()):
                del futures[fut]
                if fut.done() and not fut.cancelled() and fut.exception() is None:  # finished before the kill
                    take(fut, token)
                    continue
                job, stopped = todo.pop(token)
                if token in late:
                    stage, seconds, budget = late[token]
                    if stage == "job" or stage in dict(stopped):  # the harness's own code hung: give the job up
                        on_result(_crashed(job, f"job stopped from outside after {seconds:.0f}s without progress",
                                           Outcome.TIMEOUT))
                        finished()
                        continue
                    stopped += ((stage, f"stopped from outside after {seconds:.0f}s: it ignored its {budget:g}s "
                                        f"timeout"),)
                submit(job, stopped)
        if suspects:
            self._shut(pool)
            pool = self._open(pool.workers)
        return pool, sorted(suspects, key=lambda w: (w[0].pipeline, w[0].variant, w[0].seed))

    def kill(self) -> None:
        """Kill every worker now (Ctrl-C)."""
        for pool in list(self._pools):
            self._shut(pool, kill=True)

    def close(self) -> None:
        for pool in list(self._pools):
            self._shut(pool)


def _crashed(job: Job, msg: str = "worker process died while running this job (os._exit, segfault or out "
                                   "of memory)", outcome: Outcome = Outcome.ERROR) -> JobResult:
    run = None
    if job.record_run:
        run = dict(pipeline=job.pipeline, variant=job.variant, seed=job.seed, key=job.trace_key, metric=math.nan,
                   silent=False, error=msg, warnings=[], probes={}, seconds=0.0)
    verdicts = [dict(pipeline=job.pipeline, variant=job.variant, seed=job.seed, detector=d, key=k,
                     outcome=outcome.value, score=math.nan, evidence={"message": msg}, steps=None, seconds=0.0)
                for d, k in job.detectors]
    return JobResult(job, run, verdicts)


def plan_all(config: Config, store, cache: ResultCache) -> tuple[list[Job], dict[str, list[Job]], set[str]]:
    """Every job of both phases, planned before anything runs: (phase 1, phase 2 per
    pipeline, the pipelines whose clean runs phase 1 trains). A pipeline whose clean
    runs are all recorded has its phase 2 planned exactly now; one whose clean runs
    phase 1 trains gets a count in which its reference-reading detectors (whose keys
    depend on the clean metrics) are all still to do, and is planned again after phase 1."""
    phase1 = plan(config, store, cache, 1)
    pending = {j.pipeline for j in phase1 if j.record_run}
    phase2 = {p: plan(replace(config, pipelines=(p,)), store, cache, 2,
                      None if p in pending else store.clean_metrics(p), reference_pending=p in pending)
              for p in config.pipelines}
    return phase1, phase2, pending


def run_matrix(config: Config, store, cache_dir: str, progress: bool = True) -> None:
    """Phase 1: clean baseline; phase 2: bugs and reference detectors. Resumable. The
    progress bar's total is every job of both phases from the start (:func:`plan_all`);
    it is corrected only when a re-planned pipeline's count differs (a retried clean run
    that fails again leaves its reference, and so its cached reference verdicts, as
    they were)."""
    cache = ResultCache(cache_dir)
    if config.executor == "ray":
        from recipebench.harness.ray_executor import RayExecutor

        executor = RayExecutor(config, cache_dir)
    else:
        executor = Executor(config, cache_dir)

    def write(result: JobResult) -> None:
        store.write(result.run, result.verdicts)
        if result.run is not None and result.run["error"] is None:
            cache.put("runs", result.run["key"], result.run)
        for v in result.verdicts:
            if v["outcome"] not in ("error", "timeout"):  # failures are retried on the next run
                cache.put("verdicts", v["key"], v)

    try:
        phase1, phase2, pending = plan_all(config, store, cache)
        with tqdm(total=len(phase1) + sum(map(len, phase2.values())), desc="detection matrix", unit="job",
                  disable=not progress) as bar:
            executor.run(phase1, write, bar)
            for p in pending:  # their clean metrics are in now: the reference detectors' keys are known
                phase2[p] = plan(replace(config, pipelines=(p,)), store, cache, 2, store.clean_metrics(p))
            jobs = [j for p in config.pipelines for j in phase2[p]]
            if bar.n + len(jobs) != bar.total:
                bar.total = bar.n + len(jobs)
                bar.refresh()
            executor.run(jobs, write, bar)
    finally:
        executor.close()
