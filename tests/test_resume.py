"""An interrupted run (SIGKILL mid-way, SIGINT) resumes with --resume, loses no
finished cell and ends with the same cells.csv as an uninterrupted run."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import process_alive

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--pipelines", "digits,sequence", "--bugs", "view_instead_of_permute,epoch_based_lr_decay",
        "--detectors", "batch_dependency,lr_schedule,gradient_flow,metric_drop", "--seeds", "2", "--workers", "2",
        "--quiet"]


def _start(out: Path, cache: Path, *extra: str) -> subprocess.Popen:
    # SIGINT back to its default in the child: a shell that starts the test run in the
    # background leaves SIGINT ignored, and Python would then never raise KeyboardInterrupt
    return subprocess.Popen([sys.executable, "-m", "recipebench", "run", *extra, "--out", str(out), "--cache-dir", str(cache)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _rows(db: Path) -> int:
    try:
        return sqlite3.connect(db).execute("SELECT count(*) FROM verdicts").fetchone()[0]
    except sqlite3.Error:
        return 0


def _wait_for_rows(db: Path, proc: subprocess.Popen, n: int, timeout: float = 300) -> int:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if (k := _rows(db)) >= n:
            return k
        time.sleep(0.05)
    raise AssertionError(f"run ended or stalled before {n} verdict rows (rc={proc.poll()})")


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    reference = _start(tmp_path / "ref", tmp_path / "ref_cache", *ARGS)
    _finish(reference)

    victim = _start(tmp_path / "run", tmp_path / "cache", *ARGS)
    kept = _wait_for_rows(tmp_path / "run" / "results.sqlite", victim, 8)
    os.killpg(victim.pid, signal.SIGKILL)  # the whole process group: parent and workers
    victim.wait()
    assert _rows(tmp_path / "run" / "results.sqlite") >= kept  # nothing finished is lost
    assert not (tmp_path / "run" / "cells.csv").exists()

    resumed = _start(tmp_path / "run", tmp_path / "cache", "--resume", "--quiet")
    _finish(resumed)
    assert (tmp_path / "run" / "cells.csv").read_bytes() == (tmp_path / "ref" / "cells.csv").read_bytes()


def test_sigint_says_how_to_resume(tmp_path):
    proc = _start(tmp_path / "run", tmp_path / "cache", *ARGS)
    _wait_for_rows(tmp_path / "run" / "results.sqlite", proc, 4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err
    resumed = _start(tmp_path / "run", tmp_path / "cache", "--resume", "--quiet")
    _finish(resumed)
    assert (tmp_path / "run" / "cells.csv").exists()


def _children(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # field 4 of /proc/PID/stat: the parent's pid
            kids.add(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the workers")
def test_workers_exit_when_the_parent_is_killed(tmp_path):
    """kill -9 of the parent alone (as the OOM killer does): no worker lingers."""
    victim = _start(tmp_path / "run", tmp_path / "cache", *ARGS)
    _wait_for_rows(tmp_path / "run" / "results.sqlite", victim, 2)
    workers = _children(victim.pid)
    assert workers, "the run has no worker processes"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    end = time.time() + 20
    while time.time() < end and any(process_alive(w) for w in workers):
        time.sleep(0.2)
    assert not [w for w in workers if process_alive(w)], "workers outlived their parent"
