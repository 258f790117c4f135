"""Run the detection matrix: plan jobs, execute them on warm workers, store results.

A *job* is one (pipeline, variant, seed): one instrumented training run (the trace,
cached on disk) shared by every detector scored on it. Clean runs are the baseline
and go first (phase 1); bug runs and the reference-reading detectors (``metric_drop``)
need the clean metrics and go second. Every finished job is written to the results
database at once, so an interrupted run resumes with ``--resume``.
"""
from __future__ import annotations

import math
import os
import signal
import threading
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import get_context

from tqdm import tqdm

from recipebench.bugs.base import BUGS, parse_variant
from recipebench.detectors.base import DETECTORS, Outcome, Verdict
from recipebench.harness.cache import ResultCache, code_key, core_key, digest
from recipebench.harness.pipeline import PIPELINES


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


def plan(config: Config, store, cache: ResultCache, phase: int, clean_metrics: dict | None = None) -> list[Job]:
    """Jobs still to do for a phase. Rows already in the database with the same key
    are skipped; rows found in the result cache are copied into the database."""
    run_keys, verdict_keys = store.run_keys(), store.verdict_keys()
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
                    reference = tuple(m for s, m in sorted((clean_metrics or {}).items())
                                      if s != seed and s in config.seeds and not math.isnan(m))
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


def init_worker(cache_dir: str, plugins: tuple) -> None:
    """Warm worker: one torch thread, registries and plugins loaded once."""
    global _CACHE
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it saves and stops
    exit_with_parent()
    warnings.simplefilter("ignore")  # runs record their own warnings; workers stay quiet
    _CACHE = ResultCache(cache_dir)
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


def run_job(job: Job, timeout: float) -> JobResult:
    from recipebench.bugs.base import make_variant
    from recipebench.harness.pipeline import get_pipeline
    from recipebench.harness.probes import applicable_probes
    from recipebench.harness.subject import Reference, Subject
    from recipebench.harness.trace import Trace, record

    trace = _CACHE.get("traces", job.trace_key) if _CACHE else None
    pipeline = None
    try:
        with deadline(timeout):
            pipeline = make_variant(get_pipeline(job.pipeline), job.variant)
    except CellTimeout:
        trace = Trace(error=f"apply() timed out after {timeout:g}s")
    except Exception as exc:
        trace = Trace(error=f"apply() raised {type(exc).__name__}: {exc}")
    if trace is None:
        try:
            with deadline(timeout):
                trace = record(pipeline, job.seed)
        except CellTimeout:
            trace = Trace(error=f"training timed out after {timeout:g}s")
        if _CACHE and trace.error is None:
            _CACHE.put("traces", job.trace_key, trace)
    subject = Subject(pipeline, job.seed, trace, Reference(job.reference or ()))

    verdicts = []
    for name, vkey in job.detectors:
        t0 = time.perf_counter()
        verdict = check_one(name, subject, pipeline, trace, timeout)
        verdicts.append(dict(pipeline=job.pipeline, variant=job.variant, seed=job.seed, detector=name, key=vkey,
                             outcome=verdict.outcome.value, score=verdict.score, evidence=verdict.evidence,
                             steps=verdict.steps, seconds=round(time.perf_counter() - t0, 4)))

    run = None
    if job.record_run:  # after the detectors, so each pays for the experiments it shares with probes
        probes = {}
        if trace.error is None:
            for pr in applicable_probes(pipeline.capabilities):
                try:
                    with deadline(timeout):
                        probes[pr.name] = float(pr.fn(subject))
                except (Exception, CellTimeout):
                    probes[pr.name] = math.nan
        run = dict(pipeline=job.pipeline, variant=job.variant, seed=job.seed, key=job.trace_key,
                   metric=trace.metric, silent=trace.silent, error=trace.error, warnings=trace.warnings,
                   probes=probes, seconds=round(trace.seconds, 4), curves=curves(trace))

    return JobResult(job, run, verdicts)


def curves(trace, points: int = 60) -> dict:
    """What the report plots: loss and LR per step (thinned to about ``points``
    values), per-channel input mean/std of the recorded batches, the share of
    fixed-batch predictions that changed since the previous snapshot, and the first
    layer's final weights when they are small conv filters."""
    import numpy as np

    stride = max(1, len(trace.loss) // points)
    preds = np.asarray(trace.preds).reshape(len(trace.preds), -1) if trace.preds else np.zeros((0, 0))
    churn = [float((preds[i] != preds[i - 1]).mean()) for i in range(1, len(preds))]
    return {"step": list(range(0, len(trace.loss), stride)), "loss": [round(v, 5) for v in trace.loss[::stride]],
            "lr": [float(f"{v:.4g}") for v in trace.lr[::stride]],
            "input_mean": [[round(v, 4) for v in m] for m in trace.input_mean],
            "input_std": [[round(v, 4) for v in m] for m in trace.input_std],
            "pred_steps": trace.pred_steps[1:], "pred_churn": [round(c, 4) for c in churn],
            "first_layer": trace.first_layer}


def check_one(name: str, subject, pipeline, trace, timeout: float) -> Verdict:
    """One detector on one subject; every failure becomes an error/timeout verdict."""
    try:
        det = DETECTORS.get(name)()
        if pipeline is None or trace.error is not None:
            return Verdict(Outcome.ERROR, evidence={"message": f"training failed: {trace.error}"})
        if not det.applies_to(pipeline.capabilities):
            return Verdict(Outcome.NOT_APPLICABLE)
        timeout = max(timeout, det.min_timeout)
        with deadline(timeout):
            verdict = det.check(subject)
        if not isinstance(verdict, Verdict):
            return Verdict(Outcome.ERROR, evidence={
                "message": f"check() returned {type(verdict).__name__}, expected Verdict"})
        return verdict
    except CellTimeout:
        return Verdict(Outcome.TIMEOUT, evidence={"message": f"detector exceeded {timeout:g}s"})
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return Verdict(Outcome.ERROR, evidence={
            "message": f"{type(exc).__name__}: {exc} ({os.path.basename(tb.filename)}:{tb.lineno})"})


# ---------------------------------------------------------------- execution (parent)

class Executor:
    """A pool of warm worker processes; a job whose worker dies is retried alone once,
    then recorded as an error, and the rest of the matrix goes on."""

    def __init__(self, config: Config, cache_dir: str):
        self.config, self.cache_dir = config, cache_dir
        self.pool = self._new_pool(config.workers)

    def _new_pool(self, n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=n, mp_context=get_context("spawn"),
                                   initializer=init_worker, initargs=(self.cache_dir, self.config.plugins))

    def run(self, jobs: list[Job], on_result, progress: tqdm) -> None:
        suspects = self._run_pool(jobs, on_result, progress)
        if suspects:
            self._isolate(suspects, on_result)
            progress.update(len(suspects))

    def _isolate(self, suspects: list[Job], on_result) -> None:
        """Re-run each job whose worker died piece by piece (the run, then one detector
        at a time) on a one-worker pool, so only the piece that kills its worker
        becomes an error cell; the pool is replaced after each death."""
        pieces = []
        for job in suspects:
            pieces.append(replace(job, detectors=()))
            pieces += [replace(job, detectors=(d,), record_run=False) for d in job.detectors]
        solo = self._new_pool(1)
        try:
            for piece in pieces:
                if not piece.detectors and not piece.record_run:
                    continue
                try:
                    on_result(solo.submit(run_job, piece, self.config.timeout).result())
                except BrokenProcessPool:
                    on_result(_crashed(piece))
                    solo.shutdown(cancel_futures=True)
                    solo = self._new_pool(1)
        finally:
            solo.shutdown(cancel_futures=True)

    def _run_pool(self, jobs, on_result, progress) -> list[Job]:
        futures = {self.pool.submit(run_job, j, self.config.timeout): j for j in jobs}
        suspects = []
        for fut in as_completed(futures):
            try:
                on_result(fut.result())
                progress.update()
            except BrokenProcessPool:
                suspects.append(futures[fut])
            except Exception as exc:  # a harness failure in one job must not stop the matrix
                on_result(_crashed(futures[fut], f"job failed: {type(exc).__name__}: {exc}"))
                progress.update()
        if suspects:
            self.pool.shutdown(cancel_futures=True)
            self.pool = self._new_pool(self.config.workers)
        return sorted(suspects, key=lambda j: (j.pipeline, j.variant, j.seed))

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def _crashed(job: Job, msg: str = "worker process died while running this job (os._exit, segfault or out "
                                   "of memory)") -> JobResult:
    run = None
    if job.record_run:
        run = dict(pipeline=job.pipeline, variant=job.variant, seed=job.seed, key=job.trace_key, metric=math.nan,
                   silent=False, error=msg, warnings=[], probes={}, seconds=0.0)
    verdicts = [dict(pipeline=job.pipeline, variant=job.variant, seed=job.seed, detector=d, key=k,
                     outcome=Outcome.ERROR.value, score=math.nan, evidence={"message": msg}, steps=None, seconds=0.0)
                for d, k in job.detectors]
    return JobResult(job, run, verdicts)


def run_matrix(config: Config, store, cache_dir: str, progress: bool = True) -> None:
    """Phase 1: clean baseline; phase 2: bugs and reference detectors. Resumable."""
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
        with tqdm(total=0, desc="detection matrix", unit="job", disable=not progress) as bar:
            phase1 = plan(config, store, cache, 1)
            bar.total += len(phase1)
            bar.refresh()
            executor.run(phase1, write, bar)
            phase2 = [j for p in config.pipelines
                      for j in plan(replace(config, pipelines=(p,)), store, cache, 2, store.clean_metrics(p))]
            bar.total += len(phase2)
            bar.refresh()
            executor.run(phase2, write, bar)
    finally:
        executor.close()
