"""The command line refuses bad input with one line before anything trains, locks its
output directory, keeps small runs out of ``reports/``, and re-renders or resumes runs
made with file plugins. No test here writes into the repository's ``reports/``: every
command gets ``--out`` and ``--cache-dir`` under ``tmp_path`` or runs from there."""
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

from recipebench.bugs.base import BUGS
from recipebench.detectors.base import DETECTORS
from recipebench.harness.cli import main
from recipebench.harness.pipeline import PIPELINES

BASE = ["--pipelines", "digits", "--workers", "1", "--bugs", "wrong_normalization_mean", "--seeds", "2", "--quiet"]
PLUGIN = '''
from recipebench.harness.pipeline import get_pipeline


def my_pipeline():
    return get_pipeline("digits").replace(name="my_pipeline")
'''


@pytest.fixture(autouse=True)
def registries():
    """File plugins loaded by a test do not leak into the other tests' default catalog."""
    saved = [(r, dict(r.load()._entries)) for r in (PIPELINES, BUGS, DETECTORS)]
    yield
    for r, entries in saved:
        r._entries.clear()
        r._entries.update(entries)


def run_cli(*argv, limit: int = 600):
    """``main`` in this process; an alarm turns a command that would hang (planning a
    million seeds) into a failure instead of a stuck suite."""
    def stuck(signum, frame):
        raise TimeoutError(f"recipebench {' '.join(argv)} still running after {limit}s")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(limit)
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main([str(a) for a in argv])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue(), err.getvalue()


def subprocess_cli(*argv, cwd, timeout: int = 900, **kw):
    return subprocess.run([sys.executable, "-m", "recipebench", *map(str, argv)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **kw)


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recipebench: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def nothing_trained(out: Path, cache: Path) -> bool:
    return not (out / "results.sqlite").exists() and not any((cache / kind).exists()
                                                             for kind in ("traces", "runs", "verdicts"))


def over(argv: list, **flags) -> list:
    """``argv`` with each ``--flag value`` replaced (or added)."""
    argv = list(argv)
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


BAD_RUNS = {
    "seeds 0": (dict(seeds="0"), "--seeds"),
    "seeds -1": (dict(seeds="-1"), "--seeds"),
    "seeds 1000000": (dict(seeds="1000000"), "1000"),
    "workers 0": (dict(workers="0"), "--workers"),
    "timeout -1": (dict(timeout="-1"), "--timeout"),
    "timeout 0": (dict(timeout="0"), "--timeout"),
    "empty detectors": (dict(detectors=""), "--detectors"),
    "empty pipelines": (dict(pipelines=""), "--pipelines"),
    "empty bugs": (dict(bugs=""), "--bugs none"),
    "none with a bug": (dict(bugs="none,wrong_normalization_mean"), "clean runs only"),
    "no bug applies": (dict(bugs="view_instead_of_permute"), "--bugs none"),
    "out is a file": (dict(out="{tmp}/a_file"), "not a directory"),
    "out unwritable": (dict(out="/proc/recipebench/out"), "/proc/recipebench/out"),
    "cache-dir /dev/null": (dict(cache_dir="/dev/null"), "/dev/null"),
    "pipeline factory raises": (dict(pipelines="{tmp}/bad.py:factory"), "RuntimeError: boom"),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_run_input_is_one_line_before_any_training(case, tmp_path):
    flags, needle = BAD_RUNS[case]
    (tmp_path / "a_file").write_text("not a directory\n")
    (tmp_path / "bad.py").write_text("def factory():\n    raise RuntimeError('boom')\n")
    flags = {k: v.format(tmp=tmp_path) for k, v in flags.items()}
    argv = over(BASE + ["--out", tmp_path / "o", "--cache-dir", tmp_path / "c"], **flags)
    code, _, err = run_cli("run", *argv, limit=300)
    assert_one_line_error(code, err, needle)
    assert nothing_trained(tmp_path / "o", tmp_path / "c")


def test_the_command_itself_prints_one_line(tmp_path):
    """The real entry point (argument parsing included) prints no usage block and no traceback."""
    r = subprocess_cli("run", *over(BASE, seeds="0"), "--out", tmp_path / "o", "--cache-dir", tmp_path / "c",
                       cwd=tmp_path)
    assert_one_line_error(r.returncode, r.stderr, "--seeds", "1000")
    assert nothing_trained(tmp_path / "o", tmp_path / "c")


def results_db(path: Path, config: dict | None = None, rows: int = 0) -> Path:
    """A results database written without training (the store's own schema)."""
    from recipebench.harness.store import Store

    store = Store(path / "results.sqlite")
    if config is not None:
        store.set_meta(config=config)
    store.write(None, [dict(pipeline="digits", variant="clean", seed=i, detector=f"d{i}", key="k", outcome="clean",
                            score=0.0, evidence={"pad": "x" * 500}, steps=1, seconds=0.0) for i in range(rows)])
    store.close()
    return path / "results.sqlite"


CONFIG = dict(pipelines=["digits"], variants=["wrong_normalization_mean"], detectors=["input_stats"], seeds=[0, 1],
              workers=1, timeout=120.0, plugins=[], executor="local", address=None)


@pytest.mark.parametrize("state", ["damaged", "moved aside", "never finished"])
def test_report_on_a_database_without_cells(state, tmp_path):
    """A damaged database is named and left in place (report never trains or moves
    files); one moved aside by an earlier run, or one with no finished cell, is one line."""
    db = results_db(tmp_path, CONFIG, rows=200 if state == "damaged" else 0)
    if state == "damaged":
        blob = bytearray(db.read_bytes())
        blob[100:4000] = b"\xff" * 3900
        db.write_bytes(bytes(blob))
    elif state == "moved aside":
        db.rename(tmp_path / "results.corrupt")
        results_db(tmp_path)  # the fresh, empty database the move left behind
    before = db.read_bytes()
    code, _, err = run_cli("report", "--out", tmp_path)
    assert_one_line_error(code, err, str(db))
    assert db.read_bytes() == before and not (tmp_path / "cells.csv").exists()
    if state == "moved aside":
        assert "results.corrupt" in err


def test_resume_refuses_a_changed_selection(tmp_path):
    db = results_db(tmp_path / "o", CONFIG)
    for flags, named in ((["--bugs", "labels_misaligned"], "--bugs"), (["--seeds", "3"], "--seeds"),
                         (["--pipelines", "digits,regression", "--detectors", "metric_drop"], "--detectors")):
        code, _, err = run_cli("run", "--resume", "--out", tmp_path / "o", "--cache-dir", tmp_path / "c", *flags)
        assert_one_line_error(code, err, named, "--resume")
        assert sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone() == (0,)
        assert not (tmp_path / "c" / "traces").exists()


def wait_for_lock(lock: Path, proc: subprocess.Popen, limit: float = 300) -> str:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if lock.exists() and lock.read_text().strip():
            return lock.read_text().strip()
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"{lock} never appeared")


def test_concurrent_runs_on_one_output_directory_cannot_mix(tmp_path):
    out, cache = tmp_path / "o", tmp_path / "c"
    first = subprocess.Popen([sys.executable, "-m", "recipebench", "run", *over(BASE, detectors="input_stats,metric_drop"),
                              "--out", out, "--cache-dir", cache], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for_lock(out / ".lock", first) == str(first.pid)
        code, _, err = run_cli("run", *over(BASE, detectors="gradient_flow", seeds="3"), "--out", out,
                               "--cache-dir", cache)
        assert_one_line_error(code, err, f"pid {first.pid}", str(out / ".lock"))
        code, _, err = run_cli("report", "--out", out)  # nor is a half-written run rendered
        assert_one_line_error(code, err, f"pid {first.pid}")
        stdout, stderr = first.communicate(timeout=900)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    cells = pd.read_csv(out / "cells.csv")
    assert set(cells.detector) == {"input_stats", "metric_drop"}
    assert json.loads(sqlite3.connect(out / "results.sqlite").execute(
        "SELECT value FROM meta WHERE key='config'").fetchone()[0])["seeds"] == [0, 1]


def test_a_crashed_run_leaves_no_lock(tmp_path):
    """flock is released by the kernel: a run killed with SIGKILL does not block the next."""
    from recipebench.harness.cli import _locked

    holder = subprocess.run([sys.executable, "-c", textwrap.dedent(f'''
        import os, signal
        from pathlib import Path
        from recipebench.harness.cli import _locked
        with _locked(Path({str(tmp_path)!r})):
            os.kill(os.getpid(), signal.SIGKILL)
    ''')], capture_output=True, text=True, timeout=300)
    assert holder.returncode == -signal.SIGKILL, holder.stderr
    assert (tmp_path / ".lock").read_text().strip().isdigit()  # the dead run's pid is still written there
    with _locked(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


def test_partial_selection_leaves_reports_alone(tmp_path, monkeypatch):
    """Without --out, a partial selection writes under the cache directory, prints where,
    and never touches ``reports/`` (here a stand-in in tmp_path); --bugs none runs clean seeds."""
    monkeypatch.chdir(tmp_path)
    committed = tmp_path / "reports"
    committed.mkdir()
    for name in ("matrix.md", "cells.csv", "results.sqlite"):
        (committed / name).write_text(f"committed {name}\n")
    code, out, err = run_cli("run", *over(BASE, bugs="none", detectors="input_stats"))
    assert code == 0, err
    assert {p.name: p.read_text() for p in committed.iterdir()} == {
        n: f"committed {n}\n" for n in ("matrix.md", "cells.csv", "results.sqlite")}
    written = [Path(line.split("wrote ", 1)[1].split("/ (")[0]) for line in out.splitlines() if " wrote " in line]
    assert len(written) == 1 and written[0].parts[:2] == (".recipebench_cache", "matrices"), out
    cells = pd.read_csv(written[0] / "cells.csv")
    assert set(cells.bug) == {"clean"} and set(cells.detector) == {"input_stats"}
    # the same selection again finds the same directory (resumable without --out)
    code, out, err = run_cli("run", "--resume", *over(BASE, bugs="none", detectors="input_stats"))
    assert code == 0 and f"wrote {written[0]}/" in out, err


def test_report_and_resume_a_run_with_a_file_pipeline(tmp_path):
    """The recorded run names its pipeline plugin by absolute path: report and resume load
    it again (from another directory too); resume reuses every row; a plugin file that
    has gone away is one line naming it."""
    (tmp_path / "plug.py").write_text(PLUGIN)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out, cache = tmp_path / "o", tmp_path / "c"
    r = subprocess_cli("run", *over(BASE, pipelines="plug.py:my_pipeline", detectors="input_stats"),
                       "--out", out, "--cache-dir", cache, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "my_pipeline" in set(pd.read_csv(out / "cells.csv").pipeline)
    count = "SELECT count(*), sum(seconds), group_concat(key) FROM verdicts"
    before = sqlite3.connect(out / "results.sqlite").execute(count).fetchone()

    (out / "matrix.md").unlink()
    r = subprocess_cli("report", "--out", out, cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert "## my_pipeline" in (out / "matrix.md").read_text()

    r = subprocess_cli("run", "--resume", "--out", out, "--cache-dir", cache, "--quiet", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert sqlite3.connect(out / "results.sqlite").execute(count).fetchone() == before  # nothing recomputed

    (tmp_path / "plug.py").rename(tmp_path / "plug.py.moved")
    for argv in (["report", "--out", out], ["run", "--resume", "--out", out, "--cache-dir", cache]):
        r = subprocess_cli(*argv, cwd=elsewhere)
        assert_one_line_error(r.returncode, r.stderr, str(tmp_path / "plug.py"))


def test_html_evidence_with_missing_scores():
    """Error, timeout and not-applicable cells have no score (None from SQLite, or NaN):
    the evidence text says n/a instead of crashing the report."""
    from recipebench.harness.html import _evidence

    verdicts = pd.DataFrame([dict(pipeline="digits", variant="clean", seed=s, detector="input_stats", outcome=o,
                                  score=score, evidence={"message": "m"}, steps=steps)
                             for s, (o, score, steps) in enumerate([("error", None, None), ("timeout", float("nan"), None),
                                                                    ("clean", 0.25, 12)])])
    section = _evidence("digits", "clean", pd.DataFrame(), verdicts)
    text = section["detectors"][0]["text"]
    assert "seed 0: error (score n/a, n/a steps)" in text and "seed 2: clean (score 0.25, 12 steps)" in text
    none = verdicts.assign(score=pd.Series([None] * 3, dtype=object), steps=pd.Series([None] * 3, dtype=object))
    assert "seed 2: clean (score n/a, n/a steps)" in _evidence("digits", "clean", pd.DataFrame(), none)["detectors"][0]["text"]


@pytest.mark.parametrize("pipelines", ["nope", ""])
def test_eval_detector_pipeline_selection_is_validated_before_training(pipelines, tmp_path):
    """`eval-detector --pipelines` (develop a detector on the calibration side) takes the
    same names as `run --pipelines`: an unknown or empty selection is one line."""
    code, _, err = run_cli("eval-detector", "batch_dependency", "--pipelines", pipelines, "--bugs", "none",
                           "--quiet", "--out", tmp_path / "o", "--cache-dir", tmp_path / "c")
    assert_one_line_error(code, err, "pipeline")
    assert nothing_trained(tmp_path / "o", tmp_path / "c")
