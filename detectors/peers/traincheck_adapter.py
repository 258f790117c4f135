"""TrainCheck (PyPI ``traincheck`` 0.2.0, Apache-2.0; Jiang et al., OSDI'25): infers
training invariants from known-good runs, then checks a target run's trace against them.

TrainCheck instruments a Python *script* (it rewrites the source, patches ``torch``
and tracks the module-level variable named by ``--models-to-track``), so the adapter
does what a user would: it writes the pipeline's training script to a work directory
(the pipeline itself, bug and all, is passed in by value with cloudpickle, so the
adapter never learns which bug it holds) and calls the three console tools.

Per pipeline, once, cached by the hash of the pipeline's and the harness's source and
the TrainCheck version (under ``$RECIPEBENCH_CACHE_DIR/traincheck/``, a file lock keeps
two workers from doing it twice):

1. ``traincheck-collect`` full traces of the *clean* pipeline on reference seeds
   1000 and 1001 (disjoint from the scored seeds 0..N, several runs as the paper
   recommends), and ``traincheck-infer`` invariants from both;
2. calibration: two more clean held-out seeds (1002, 1003), each collected and checked
   twice (``REPEATS``), recording which invariants every collection violates;
3. only ``invariants.json`` (about 1 MB) and ``calibration.json`` are kept: the traces
   (about 110 MB per pipeline), TrainCheck's logs and its ``invariants.json.failed``
   are deleted once inferred and checked, and so is each checked run's work directory
   once its summaries are read (kept when a tool fails, to debug).

**Rule.** TrainCheck's violations are not reproducible from collection to collection:
which invariants a clean run violates changes from one collection of the same seed to
the next (regression: clean seed 0 violated 18 invariants in one collection, 10 in each
of two others; seed 1002 violated 10, then 14, the 4 extra all ``Adam.step() changes
Parameter.data_ID``-style API-containment invariants), so neither a count compared with
clean counts nor a fixed set of "flaky" invariants is stable. A bug changes the training
itself, which is deterministic per seed, so its violations should recur in every
collection. So each checked run is collected and
checked ``REPEATS = 2`` times and only invariants violated in **every** collection count,
minus those any clean calibration collection violated: ``new = |violated(r1) &
violated(r2) - flaky|``. The threshold is the same statistic for a clean seed, leaving
it out: ``max over calibration seeds c of |violated(c1) & violated(c2) - violated(other
seed's collections)|``. A run is flagged when ``new`` exceeds it (an invariant is named
by TrainCheck's relation type and display name, as in ``violations_summary.json``).
The price is two collections per checked run. Measured on clean seeds 0-2 of digits and
regression (calibration collections: 16,16,16,16 and 10,10,10,10 violated invariants,
threshold 0 on both): 0 of 6 flagged; regression seed 1 violated 12 invariants in one
collection and 10 in the other, which the previous rule (count above the largest clean
count, 10) would have flagged, as it flagged seeds 0 and 1 (18 in single collections)
in an earlier measurement. A checked run took 215-260 s and a pipeline's first cell 27-35
minutes on a 2-core machine with a load of ~9 (a quiet machine is 4-5x faster). A tool failure is an ``error`` verdict
with TrainCheck's last output lines, never a silent pass. Time to detection is
TrainCheck's ``first_violation_step`` among the counted violations.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from recipebench.detectors.base import Detector, Outcome, Verdict, register_detector
from recipebench.detectors.peers import cache_root, locked

REF_SEEDS, CAL_SEEDS, REPEATS = (1000, 1001), (1002, 1003), 2  # REPEATS: collections per checked run
# Instrument the first 5 steps, then every 10th (TrainCheck's own policy when checking);
# the same for reference and target runs. Full instrumentation of all steps makes
# inference take 15+ minutes per 150-step trace here, sampled it takes seconds.
SAMPLING = ("--warm-up-steps", "5", "--sampling-interval", "10")
ROOT = Path(__file__).resolve().parents[2]  # the directory holding harness/, bugs/, detectors/


class ToolError(RuntimeError):
    """A TrainCheck command failed; the message holds its last output lines."""


def training_script(pickled: Path, seed: int) -> str:
    """The standalone script TrainCheck instruments: a module-level loop over the
    pipeline's batches, each through the harness's :class:`Loop` (train_step ->
    schedulers stepped with their optimizer), the model at module level, named ``model``."""
    return textwrap.dedent(f"""\
        import torch
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import cloudpickle
        from recipebench.harness.trace import Loop, batches, monitored_values, prepare, seed_everything, steps_per_epoch
        with open({str(pickled)!r}, "rb") as f:
            p = cloudpickle.load(f)
        torch.set_num_threads(1)
        prep = prepare(p)
        seed_everything({seed})
        model = p.build_model(p)
        loop = Loop(p, model, p.steps, steps_per_epoch(p, prep), monitored=monitored_values(p, model, prep))
        train_batches = zip(range(p.steps), batches(p, prep, {seed}))
        for step, (x, y) in train_batches:
            loop.batch(step, x, y)
        """)


def _tool(module: str, *args: str, cwd: Path) -> None:
    """Run a TrainCheck console entry point; kill its whole process group if this cell
    is interrupted (timeout, Ctrl-C), so no instrumented run outlives its cell."""
    cmd = [sys.executable, "-c", f"import sys; from traincheck.{module} import main; sys.argv[0] = {module!r}; main()", *args]
    log = cwd / f"{module}.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if rc != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise ToolError(f"{module} exited {rc}: {tail[-400:]}")


def collect(pipeline, seed: int, workdir: Path, invariants: Path | None = None) -> Path:
    """Write the training script for (pipeline, seed) and collect its TrainCheck trace."""
    import cloudpickle

    workdir.mkdir(parents=True, exist_ok=True)
    pickled = workdir / "pipeline.pkl"
    pickled.write_bytes(cloudpickle.dumps(pipeline))
    (workdir / "train.py").write_text(training_script(pickled, seed))
    extra = ["--invariants", str(invariants)] if invariants else []
    _tool("collect_trace", "-p", "train.py", "--models-to-track", "model", "--output-dir", "trace", *SAMPLING, *extra,
          cwd=workdir)
    return workdir / "trace"


def check_trace(trace: Path, invariants: Path, workdir: Path) -> dict:
    """``traincheck-check`` one trace; returns its ``violations_summary.json``."""
    _tool("checker", "-f", str(trace), "-i", str(invariants), "-o", "checked", "--no-html-report", cwd=workdir)
    found = sorted((workdir / "checked").rglob("violations_summary.json"))
    if not found:
        raise ToolError("traincheck-check wrote no violations_summary.json")
    return json.loads(found[0].read_text())


def invariant(violation: dict) -> str:
    """An invariant of a ``violations_summary.json`` entry, by relation and name."""
    return f"{violation.get('relation_type', '?')}: {violation.get('display_name', '?')}"


def violated(summary: dict) -> set[str]:
    """The invariants a ``violations_summary.json`` reports violated."""
    return {invariant(v) for v in summary.get("violations", [])}


def calibrate(sets: dict) -> dict:
    """The rule's calibration from the invariants each clean held-out collection violates
    (``sets``: seed -> one set per repeat collection). ``flaky``: violated in any of them;
    ``threshold``: the most invariants a clean seed violates in every one of its
    collections that no collection of the other seeds violates (leave one seed out)."""
    flaky = set().union(*(v for runs in sets.values() for v in runs))
    loo = {seed: len(set.intersection(*runs) - set().union(*(v for other, w in sets.items() if other != seed for v in w)))
           for seed, runs in sets.items()}
    return {"clean_violations": {seed: [len(v) for v in runs] for seed, runs in sets.items()},
            "clean_new_leave_one_out": loo, "threshold": max(loo.values()), "flaky": sorted(flaky)}


def repeated(pipeline, seed: int, work: Path, invariants: Path) -> list[dict]:
    """``REPEATS`` independent collections and checks of one (pipeline, seed)."""
    return [check_trace(collect(pipeline, seed, work / f"r{k}", invariants), invariants, work / f"r{k}")
            for k in range(REPEATS)]


def reference(clean) -> tuple[Path, dict]:
    """Invariants inferred from clean reference seeds and the calibration of the rule,
    computed once per pipeline source; the traces are deleted afterwards (module doc)."""
    from importlib.metadata import version

    from recipebench.harness.cache import code_key, core_key, digest

    key = digest(clean.name, code_key(clean.build_model), core_key(), version("traincheck"), REF_SEEDS, CAL_SEEDS,
                 REPEATS)
    home = cache_root("traincheck") / f"{clean.name}-{key}"
    invariants, calibration = home / "invariants.json", home / "calibration.json"
    with locked(home.with_suffix(".lock")):
        if not calibration.exists():
            traces = [collect(clean, seed, home / f"ref{seed}") for seed in REF_SEEDS]
            _tool("infer_engine", "-f", *map(str, traces), "-o", str(invariants), cwd=home)
            sets = {seed: [violated(r) for r in repeated(clean, seed, home / f"cal{seed}", invariants)]
                    for seed in CAL_SEEDS}
            n_invariants = sum(1 for line in invariants.read_text().splitlines() if line.strip())
            calibration.write_text(json.dumps({**calibrate(sets), "invariants": n_invariants}))
            for path in home.iterdir():  # keep invariants.json and calibration.json only (traces, logs: ~110 MB)
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.name not in (invariants.name, calibration.name):
                    path.unlink()
    return invariants, json.loads(calibration.read_text())


@register_detector
class TrainCheck(Detector):
    name = "traincheck"
    description = "TrainCheck: invariants learned from clean reference runs are violated"
    recipe_step = "peer tool: TrainCheck (invariants inferred from known-good runs)"
    stage, kind, cost = "peers", "active", 3
    peer = True
    min_timeout = 2400.0  # the first cell of a pipeline also infers and calibrates (8 collections, minutes)
    example_bug = "frozen_parameters"

    def check(self, s):
        try:
            import cloudpickle  # noqa: F401
            import traincheck  # noqa: F401
        except ImportError as exc:
            return Verdict(Outcome.ERROR, evidence={"message": f"{exc.name} is not installed: pip install 'recipebench[peers]'"})
        from recipebench.harness.pipeline import get_pipeline

        try:
            invariants, cal = reference(get_pipeline(s.pipeline.name))
            work = cache_root("traincheck") / "runs" / str(os.getpid())
            shutil.rmtree(work, ignore_errors=True)
            summaries = repeated(s.pipeline, s.seed, work, invariants)
        except ToolError as exc:
            return Verdict(Outcome.ERROR, evidence={"message": str(exc)})
        shutil.rmtree(work, ignore_errors=True)  # the traces of a checked run are not kept either
        flaky = set(cal.get("flaky", ()))
        stable = set.intersection(*(violated(summary) for summary in summaries)) - flaky  # in every collection
        new = [v for v in summaries[0].get("violations", []) if invariant(v) in stable]
        threshold = cal["threshold"]
        flag = len(stable) > threshold
        steps = [v["first_step"] for v in new if v.get("first_step") is not None]
        return self.decide(flag, len(stable) - threshold,
                           steps=int(min(steps)) + 1 if flag and steps else s.pipeline.steps,
                           violated_invariants=max(summary["distinct_invariants_violated"] for summary in summaries),
                           violated_per_collection=[summary["distinct_invariants_violated"] for summary in summaries],
                           new_violations=len(stable), clean_threshold=threshold, clean_flaky=len(flaky),
                           invariants=cal["invariants"], relations=sorted({v.get("relation_type", "?") for v in new})[:10])
