"""Plugin isolation: whatever a detector does (return garbage, exit, raise
KeyboardInterrupt, swallow its alarm, print without end) costs its own cell only, the
rest of the run completes, and Ctrl-C stops everything at once."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.test_cli import run_cli
from tests.conftest import process_alive

ROOT = Path(__file__).resolve().parents[1]
BUG = "wrong_normalization_mean"
RUN = ["--pipelines", "digits", "--bugs", BUG, "--workers", "1", "--quiet"]
VARIANTS = ("clean", BUG)

PLUGINS = textwrap.dedent('''
    import os, sys, threading, time
    import numpy as np
    import torch
    from recipebench.detectors.base import Detector, Outcome, Verdict

    class Base(Detector):
        description = "misbehaving test detector"
        recipe_step = "none"
        stage, kind, cost = "training", "passive", 1

    def clean_run(s):  # the bug (wrong normalization mean) moves the input mean to about 1
        return abs(float(np.mean(s.trace.input_mean))) < 0.5

    class Marker(Base):
        name = "marker"
        def check(self, s):
            return self.decide(False, 0.0)

    class StrOutcome(Base):
        name = "str_outcome"
        def check(self, s):
            return Verdict("flagged", 1.0)

    class TensorEvidence(Base):
        name = "tensor_evidence"
        def check(self, s):
            return Verdict(Outcome.PASSED, 0.0, {"x": torch.ones(3)})

    class LambdaEvidence(Base):
        name = "lambda_evidence"
        def check(self, s):
            return Verdict(Outcome.PASSED, 0.0, {"f": lambda: 1})

    class LockEvidence(Base):
        name = "lock_evidence"
        def check(self, s):
            return Verdict(Outcome.PASSED, 0.0, {"lock": threading.Lock()})

    class ScalarEvidence(Base):  # 0-d tensors and numpy scalars are converted, as decide() does
        name = "scalar_evidence"
        def check(self, s):
            return Verdict(Outcome.PASSED, torch.tensor(0.25), {"x": torch.tensor(1.5), "n": np.int64(3)}, np.int64(7))

    class Exit3(Base):
        name = "exit3"
        def check(self, s):
            sys.exit(3)

    class Interrupt(Base):
        name = "interrupt"
        def check(self, s):
            raise KeyboardInterrupt

    class GenExit(Base):
        name = "gen_exit"
        def check(self, s):
            raise GeneratorExit("bye")

    class Exiting(Base):
        name = "exiting"
        def check(self, s):
            if clean_run(s):
                os._exit(3)
            return self.decide(False, 0.0)

    class Swallow(Base):  # ignores the in-worker alarm: only the parent's watchdog stops it
        name = "swallow"
        def check(self, s):
            if s.seed != 0 or not clean_run(s):
                return self.decide(False, 0.0)
            while True:
                try:
                    time.sleep(10)
                except BaseException:
                    pass

    class SlowOnSeed1(Base):
        name = "slow_on_seed1"
        def check(self, s):
            if s.seed == 1:
                with open(os.environ["ISOLATION_MARK"], "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(60)
            return self.decide(False, 0.0)

    class Chatty(Base):
        name = "chatty"
        def check(self, s):
            for i in range(200_000):
                print(f"line {i} of chatter")
            sys.stdout.flush()
            print("to stderr", file=sys.stderr)
            os.write(1, b"written to fd 1 directly\\n")
            return self.decide(False, 0.0)
''')


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugins") / "plugin_detectors.py"
    path.write_text(PLUGINS)
    return path


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """Traces and run rows of digits (clean and BUG, seeds 0 and 1), so the tests below
    train nothing and a short --timeout bites only the detectors."""
    root = tmp_path_factory.mktemp("warm")
    code, _, err = run_cli("run", *RUN, "--detectors", "input_stats", "--seeds", "2",
                           "--out", str(root / "out"), "--cache-dir", str(root / "cache"))
    assert code == 0, err
    return root / "cache"


def _cache(warm_cache, tmp_path) -> Path:
    shutil.copytree(warm_cache, tmp_path / "cache")
    return tmp_path / "cache"


def _dets(plugins, *classes) -> str:
    return ",".join(f"{plugins}:{c}" if c[0].isupper() else c for c in classes)


def _start(*argv, env=None) -> subprocess.Popen:
    # SIGINT back to its default in the child (a backgrounded shell leaves it ignored)
    return subprocess.Popen([sys.executable, "-m", "recipebench", "run", *argv], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Wait for the run; one that overruns ``timeout`` (a hang) is killed with its workers."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the run did not end within {timeout}s")
    return proc.returncode, out, err


def _verdicts(out: Path) -> dict:
    rows = sqlite3.connect(out / "results.sqlite").execute(
        "SELECT variant, seed, detector, outcome, evidence FROM verdicts")
    return {(variant, seed, det): (outcome, json.loads(ev)) for variant, seed, det, outcome, ev in rows}


def _runs(out: Path) -> dict:
    rows = sqlite3.connect(out / "results.sqlite").execute("SELECT variant, seed, error, metric FROM runs")
    return {(variant, seed): (error, metric) for variant, seed, error, metric in rows}


def test_malformed_verdicts_cost_their_cell_only(plugins, tmp_path):
    """A string outcome, a tensor, a lambda or a lock in the evidence: before, every
    detector of the job and the clean run itself were lost (pickling failed)."""
    dets = _dets(plugins, "StrOutcome", "TensorEvidence", "LambdaEvidence", "LockEvidence", "ScalarEvidence",
                 "input_stats")
    code, _, err = run_cli("run", *RUN, "--seeds", "1", "--detectors", dets,
                           "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))
    assert code == 3, err  # error/timeout cells: exit code 3
    v = _verdicts(tmp_path / "out")
    expected = {"str_outcome": "outcome is 'flagged' (str), expected an Outcome",
                "tensor_evidence": "evidence['x'] (Tensor) is not JSON-serializable",
                "lambda_evidence": "evidence['f'] (function) is not JSON-serializable",
                "lock_evidence": "evidence['lock'] (lock) is not JSON-serializable"}
    for variant in VARIANTS:
        for det, message in expected.items():
            outcome, evidence = v[(variant, 0, det)]
            assert outcome == "error" and message in evidence["message"], (det, evidence)
        assert v[(variant, 0, "scalar_evidence")] == ("passed", {"x": 1.5, "n": 3.0})
        error, metric = _runs(tmp_path / "out")[(variant, 0)]
        assert error is None and metric > 0.5  # the (cold) clean run is recorded, and the bug run
    assert v[("clean", 0, "input_stats")][0] == "passed" and v[(BUG, 0, "input_stats")][0] == "flagged"
    rows = sqlite3.connect(tmp_path / "out" / "results.sqlite").execute(
        "SELECT steps, score FROM verdicts WHERE detector='scalar_evidence'").fetchall()
    assert rows == [(7, 0.25)] * 2


def test_exit_and_interrupt_in_a_detector_cost_their_cell_only(plugins, warm_cache, tmp_path):
    """sys.exit(3) used to end recipebench silently with rc 3, KeyboardInterrupt as if
    Ctrl-C, GeneratorExit with a traceback."""
    dets = _dets(plugins, "Exit3", "Interrupt", "GenExit", "Marker")
    proc = _start(*RUN, "--seeds", "1", "--detectors", dets, "--out", str(tmp_path / "out"),
                  "--cache-dir", str(_cache(warm_cache, tmp_path)))
    code, out, err = _finish(proc, 300)
    assert code == 3, err  # error/timeout cells: exit code 3
    assert (tmp_path / "out" / "cells.csv").exists() and "Traceback" not in err
    v = _verdicts(tmp_path / "out")
    for variant in VARIANTS:
        for det, message in (("exit3", "SystemExit: 3"), ("interrupt", "KeyboardInterrupt"),
                             ("gen_exit", "GeneratorExit: bye")):
            outcome, evidence = v[(variant, 0, det)]
            assert outcome == "error" and evidence["message"].startswith(message), (det, evidence)
            assert "plugin_detectors.py:" in evidence["message"]
        assert v[(variant, 0, "marker")][0] == "passed"


def test_detector_ignoring_its_alarm_is_stopped_from_outside(plugins, warm_cache, tmp_path):
    """A detector that catches the alarm's BaseException (clean seed 0) hung the run forever.
    Now the watchdog kills the pool; the other job (seed 1, pending then, re-submitted)
    and the other cell complete."""
    dets = _dets(plugins, "Swallow", "Marker")
    start = time.monotonic()
    proc = _start(*RUN, "--seeds", "2", "--timeout", "2", "--detectors", dets, "--out", str(tmp_path / "out"),
                  "--cache-dir", str(_cache(warm_cache, tmp_path)))
    code, out, err = _finish(proc, 300)
    assert code == 3, err  # error/timeout cells: exit code 3
    v = _verdicts(tmp_path / "out")
    outcome, evidence = v[("clean", 0, "swallow")]
    assert outcome == "timeout" and "stopped from outside after" in evidence["message"], evidence
    assert "its 2s timeout" in evidence["message"]
    assert v[("clean", 1, "swallow")][0] == v[(BUG, 0, "swallow")][0] == v[(BUG, 1, "swallow")][0] == "passed"
    assert all(v[(variant, seed, "marker")][0] == "passed" for variant in VARIANTS for seed in (0, 1))
    assert len(_runs(tmp_path / "out")) == 4 and all(e is None for e, _ in _runs(tmp_path / "out").values())
    assert time.monotonic() - start < 240


def test_watchdog_also_guards_the_isolation_pool(plugins, warm_cache, tmp_path):
    """os._exit (clean run) sends the job to the one-worker isolation pool, where the
    alarm-swallowing detector is stopped from outside too: each costs its own cell."""
    dets = _dets(plugins, "Exiting", "Swallow", "Marker")
    proc = _start(*RUN, "--seeds", "1", "--timeout", "2", "--detectors", dets, "--out", str(tmp_path / "out"),
                  "--cache-dir", str(_cache(warm_cache, tmp_path)))
    code, out, err = _finish(proc, 300)
    assert code == 3, err  # error/timeout cells: exit code 3
    v = _verdicts(tmp_path / "out")
    outcome, evidence = v[("clean", 0, "exiting")]
    assert outcome == "error" and "worker process died" in evidence["message"]
    outcome, evidence = v[("clean", 0, "swallow")]
    assert outcome == "timeout" and "stopped from outside" in evidence["message"]
    assert v[("clean", 0, "marker")][0] == "passed"
    assert all(v[(BUG, 0, d)][0] == "passed" for d in ("exiting", "swallow", "marker"))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to check the worker")
def test_ctrl_c_stops_the_run_at_once(plugins, warm_cache, tmp_path):
    """SIGINT while a detector sleeps: the parent used to wait for the worker to finish
    its job (a minute here, forever for a hung detector)."""
    mark = tmp_path / "worker.pid"
    proc = _start(*RUN, "--seeds", "2", "--timeout", "120", "--detectors", _dets(plugins, "SlowOnSeed1"),
                  "--out", str(tmp_path / "out"), "--cache-dir", str(_cache(warm_cache, tmp_path)),
                  env={"ISOLATION_MARK": str(mark)})
    end = time.monotonic() + 240
    while not mark.exists() and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # the worker's pid is written and it sleeps
    assert mark.exists(), proc.communicate()[1]
    worker = int(mark.read_text())
    lines, hint = [], []

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "--resume" in line:
                hint.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("the run went on for 30s after Ctrl-C")
    exited = time.monotonic() - sent
    reader.join(timeout=5)
    err = "".join(lines)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert hint and hint[0] - sent < 2.0, f"resume hint after {hint[0] - sent if hint else None}s"
    assert exited < 2.0 + _teardown_allowance(), f"exited {exited:.1f}s after Ctrl-C"
    assert not process_alive(worker), "the worker outlived the run"
    v = _verdicts(tmp_path / "out")  # the finished job (seed 0) is kept
    assert v[("clean", 0, "slow_on_seed1")][0] == "passed" and ("clean", 1, "slow_on_seed1") not in v


def _teardown_allowance() -> float:
    """Extra seconds for the interpreter's own exit (freeing torch, pandas, scipy) on a
    loaded machine: measured, not assumed."""
    code = "import torch, pandas, scipy.stats, recipebench.harness.cli, time; print(time.monotonic(), flush=True)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return max(0.0, time.monotonic() - float(p.stdout.strip()))


def test_plugin_output_is_captured_not_printed(plugins, warm_cache, tmp_path):
    """200k printed lines went to the terminal despite --quiet; now they are the cell's
    evidence, first and last few KB, the C-level write included."""
    proc = _start(*RUN, "--seeds", "1", "--detectors", _dets(plugins, "Chatty", "Marker"),
                  "--out", str(tmp_path / "out"), "--cache-dir", str(_cache(warm_cache, tmp_path)))
    code, out, err = _finish(proc, 300)
    assert code == 0, err
    assert len(out) + len(err) < 5000, (len(out), len(err))
    v = _verdicts(tmp_path / "out")
    for variant in VARIANTS:
        outcome, evidence = v[(variant, 0, "chatty")]
        assert outcome == "passed"
        text = evidence["output"]
        assert text.startswith("line 0 of chatter\nline 1 of chatter\n")
        assert "bytes left out" in text and len(text) < 10_000
        assert text.endswith("line 199999 of chatter\nto stderr\nwritten to fd 1 directly\n")
        assert v[(variant, 0, "marker")] == ("passed", {})
