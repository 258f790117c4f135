"""What a user sees when things go wrong (issue 28): a foreign output directory is
refused, a full disk is one line with the finished rows kept, failed cells and
unfinished runs show in the exit code and the summary, SIGTERM stops a run as Ctrl-C
does, a damaged database is moved aside without overwriting an earlier one, and the
error lines name what the user typed (no internal module names, no 1,300-character
catalog). The exit codes are listed in README.md ("Exit codes")."""
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recipebench.harness import runner
from recipebench.harness.store import Store
from tests.test_cli_validation import assert_one_line_error, nothing_trained, registries, run_cli  # noqa: F401
from tests.conftest import process_alive

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--pipelines", "digits", "--bugs", "wrong_normalization_mean", "--detectors", "input_stats",
         "--seeds", "2", "--workers", "1", "--quiet"]
DETECTORS = textwrap.dedent('''
    import os, time
    from recipebench.detectors.base import Detector

    class Base(Detector):
        description = "test detector"
        recipe_step = "none"
        stage, kind, cost = "training", "passive", 1

    class Raising(Base):
        name = "raising"
        def check(self, s):
            raise RuntimeError("boom")

    class Sleeper(Base):  # on seed 1: writes its pid, then sleeps
        name = "sleeper"
        def check(self, s):
            if s.seed == 1:
                with open(os.environ["SLEEPER_MARK"], "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(120)
            return self.decide(False, 0.0)
''')
BUGS = textwrap.dedent('''
    from recipebench.bugs.base import Bug

    class Fields(Bug):
        description = "d"; recipe_step = "r"; source = "s"; family = "data"
        symptom = "final_metric"; expected_symptom = "e"

    class ApplyRaises(Fields):
        name = "apply_raises"
        def apply(self, p):
            raise RuntimeError("apply is broken")

    class ApplyReturnsNone(Fields):
        name = "apply_returns_none"
        def apply(self, p):
            return None

    class MyBug(Fields):
        name = "my_bug"
        def apply(self, p):
            return p
''')
PIPELINES = textwrap.dedent('''
    from recipebench.harness.pipeline import get_pipeline

    def model_breaks():
        def build(p):
            raise ValueError("no model today")
        return get_pipeline("digits").replace(name="model_breaks", build_model=build)

    def step_breaks():
        def step(p, model, opt, x, y, ctx):
            raise RuntimeError("shape mismatch in my train step")
        return get_pipeline("digits").replace(name="step_breaks", train_step=step)
''')


@pytest.fixture(scope="module", autouse=True)
def cache_key(tmp_path_factory):
    """A cache key of this module's own, in the environment the spawned workers and
    subprocesses inherit (the user's ~/.config is left alone)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECIPEBENCH_CACHE_KEY_FILE", str(tmp_path_factory.mktemp("key") / "cache.key"))
        yield


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    for name, text in (("dets.py", DETECTORS), ("bugs_bad.py", BUGS), ("pipes.py", PIPELINES)):
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished small run (4 jobs) and its warm cache."""
    root = tmp_path_factory.mktemp("finished")
    code, _, err = run_cli("run", *SMALL, "--out", root / "out", "--cache-dir", root / "cache")
    assert code == 0, err
    return root


def _cli(*argv, cwd=ROOT, file_limit: int | None = None, **kw) -> subprocess.Popen:
    """``recipebench`` in a subprocess; ``file_limit`` caps the size of every file it
    (and its workers) may write, as a full disk does: a write past it fails (EFBIG)."""
    def limit():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.Popen([sys.executable, "-m", "recipebench", *map(str, argv)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=limit, **kw)


def _done(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"recipebench did not end within {timeout}s")
    return proc.returncode, out, err


def _count(db: Path, table: str) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


# ------------------------------------------------------------ the output directory

def test_foreign_output_directory_is_refused(tmp_path, monkeypatch):
    """Another tool's matrix.md and cells.csv were overwritten with exit 0."""
    out = tmp_path / "theirs"
    out.mkdir()
    for name in ("matrix.md", "cells.csv", "impact.csv"):
        (out / name).write_text(f"another tool's {name}\n")
    code, _, err = run_cli("run", *SMALL, "--out", out, "--cache-dir", tmp_path / "c")
    assert_one_line_error(code, err, str(out), "--force", "not empty")
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        n: f"another tool's {n}\n" for n in ("matrix.md", "cells.csv", "impact.csv")}
    assert nothing_trained(out, tmp_path / "c")

    class Started(Exception):
        pass

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(runner, "run_matrix", started)
    with pytest.raises(Started):  # --force gets past the check (and marks the directory as recipebench's)
        run_cli("run", *SMALL, "--out", out, "--cache-dir", tmp_path / "c", "--force")
    assert (out / ".recipebench").exists()
    with pytest.raises(Started):  # marked: no --force needed any more
        run_cli("run", *SMALL, "--out", out, "--cache-dir", tmp_path / "c")


# ------------------------------------------------------------- full disk

def test_full_disk_during_a_run_is_one_line_and_resume_finishes(tmp_path):
    """The database write failed with a 20-line sqlite3 traceback (exit 1). Now: one line
    naming the database and the free space, exit 5, the finished rows kept; once space
    is back, --resume finishes the run."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    code, _, err = _done(_cli("run", *SMALL, "--detectors", "input_stats,metric_drop", "--out", out,
                              "--cache-dir", cache, file_limit=40_000))
    assert code == 5, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("recipebench: warning: 2 seeds")]
    assert len(lines) == 1 and lines[0].startswith("recipebench: error: cannot write"), err
    assert str(out / "results.sqlite") in lines[0] and " free on its filesystem" in lines[0]
    assert "--resume" in lines[0] and "Traceback" not in err
    assert _count(out / "results.sqlite", "runs") >= 1  # what finished before the disk filled is kept
    code, _, err = _done(_cli("run", "--resume", "--out", out, "--cache-dir", cache, "--quiet"))
    assert code == 0, err
    assert _count(out / "results.sqlite", "runs") == 4 and _count(out / "results.sqlite", "verdicts") == 8


def test_full_disk_while_writing_the_report_leaves_no_partial_file(finished, tmp_path):
    """A failed report write left a truncated matrix.html and an OSError traceback."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished / "out", out)
    (out / "matrix.html").unlink()  # drawn again; it is larger than the limit, the other files are not
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"}
    code, _, err = _done(_cli("report", "--out", out, file_limit=16_000))
    assert code == 5, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(out / "matrix.html") in lines[0] and " free on its filesystem" in lines[0], err
    assert not (out / "matrix.html").exists()  # no truncated page, and no temporary file left behind
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == sorted(before)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before


# ------------------------------------------------------- failed cells and validation

def test_failed_cells_exit_3_with_count_and_first_message(finished, plugins, tmp_path):
    """16 of 24 error cells exited 0 and printed "applicable 0 / nan"."""
    code, out, err = run_cli("run", *SMALL, "--detectors", f"{plugins}/dets.py:Raising,input_stats",
                             "--out", tmp_path / "out", "--cache-dir", finished / "cache")
    assert code == 3, err
    assert "FAILED: 4 of 8 detector results (4 error)" in out
    assert "digits/clean/seed 0 raising: RuntimeError: boom (dets.py:" in out
    assert "exit code 3" in out
    table = out.split("\n\n")[0]
    raising = next(line for line in table.splitlines() if line.startswith("raising"))
    assert "nan" not in table and raising.split() == ["raising", "0", "0", "-", "4"]


@pytest.mark.parametrize("cls,message", [
    ("ApplyRaises", "apply() on pipeline 'digits' raised RuntimeError: apply is broken"),
    ("ApplyReturnsNone", "returned NoneType, expected a Pipeline"),
])
def test_a_bug_whose_apply_fails_is_refused_before_training(plugins, tmp_path, cls, message):
    """The clean runs trained first, then the run exited 0 with error cells."""
    code, _, err = run_cli("run", *SMALL, "--bugs", f"{plugins}/bugs_bad.py:{cls}", "--out", tmp_path / "o",
                           "--cache-dir", tmp_path / "c")
    assert_one_line_error(code, err, message, "bugs_bad.py")
    assert nothing_trained(tmp_path / "o", tmp_path / "c")


@pytest.mark.parametrize("factory,message", [("model_breaks", "build_model() raised ValueError: no model today"),
                                             ("step_breaks", "one training step raised RuntimeError: shape mismatch")])
def test_a_plugin_pipeline_that_cannot_train_is_refused_before_training(plugins, tmp_path, factory, message):
    code, _, err = run_cli("run", *SMALL, "--bugs", "none", "--pipelines", f"{plugins}/pipes.py:{factory}",
                           "--out", tmp_path / "o", "--cache-dir", tmp_path / "c")
    assert_one_line_error(code, err, f"pipeline '{factory}'", message)
    assert nothing_trained(tmp_path / "o", tmp_path / "c")


# ---------------------------------------------------------------- unfinished runs

def test_report_marks_an_unfinished_run(finished, tmp_path):
    """An interrupted run (here: one job's rows gone) rendered as if finished, exit 0."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished / "out", out)
    con = sqlite3.connect(out / "results.sqlite")
    with con:
        con.execute("DELETE FROM verdicts WHERE variant='wrong_normalization_mean' AND seed=1")
        con.execute("DELETE FROM runs WHERE variant='wrong_normalization_mean' AND seed=1")
    con.close()
    code, stdout, err = run_cli("report", "--out", out)
    assert code == 4, err
    assert "UNFINISHED: 3 of 4 jobs done" in stdout and "--allow-partial" in stdout
    assert "**UNFINISHED RUN: 3 of 4 jobs done" in (out / "matrix.md").read_text()
    assert '<p class="unfinished">UNFINISHED RUN: 3 of 4 jobs done' in (out / "matrix.html").read_text()
    code, stdout, err = run_cli("report", "--out", out, "--allow-partial")
    assert code == 0 and "UNFINISHED: 3 of 4 jobs done" in stdout, err
    code, stdout, err = run_cli("report", "--out", finished / "out")  # a finished run is not marked
    assert code == 0 and "UNFINISHED" not in stdout + (finished / "out" / "matrix.md").read_text(), err


# ----------------------------------------------------------------------- SIGTERM

@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to check the worker")
def test_sigterm_stops_the_run_like_ctrl_c(finished, plugins, tmp_path):
    """SIGTERM ended the run without a resume hint, with a leaked-semaphore warning."""
    import shutil

    mark = tmp_path / "worker.pid"
    shutil.copytree(finished / "cache", tmp_path / "cache")
    proc = _cli("run", *SMALL, "--bugs", "none", "--detectors", f"{plugins}/dets.py:Sleeper", "--timeout", "300",
                "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache",
                env={**os.environ, "SLEEPER_MARK": str(mark)})
    end = time.monotonic() + 300
    while not mark.exists() and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    assert mark.exists(), proc.communicate()[1]
    worker = int(mark.read_text())
    proc.send_signal(signal.SIGTERM)
    code, _, err = _done(proc, 60)
    assert code == 143, err
    assert "terminated (SIGTERM)" in err and f"recipebench run --resume --out {tmp_path / 'out'}" in err
    assert "Traceback" not in err and "leaked" not in err, err
    assert not process_alive(worker), "the worker outlived the run"
    con = sqlite3.connect(tmp_path / "out" / "results.sqlite")  # the finished job (seed 0) is kept
    assert con.execute("SELECT seed, outcome FROM verdicts").fetchall() == [(0, "passed")]
    con.close()


# ------------------------------------------------------------------ quarantine

def test_a_second_damaged_database_does_not_overwrite_the_first(tmp_path):
    db = tmp_path / "results.sqlite"
    for n in (1, 2):
        db.write_bytes(f"damaged database number {n} ".encode() * 100)
        with pytest.warns(UserWarning, match=r"integrity check .* moved to .*results\.corrupt-"):
            Store(db).close()
    kept = sorted(tmp_path.glob("results.corrupt-*"))
    assert len(kept) == 2, kept
    assert sorted(p.read_bytes()[:25] for p in kept) == [b"damaged database number 1", b"damaged database number 2"]
    code, _, err = run_cli("report", "--out", tmp_path)  # the fresh database holds no run; the file aside is named
    assert code == 2 and "moved aside to" in err and "results.corrupt-" in err, err


# ------------------------------------------------------------------------ messages

def test_unknown_name_line_is_short_and_points_to_the_list(tmp_path):
    """All 57 bug names were listed on one 1,300-character line."""
    code, _, err = run_cli("run", "--bugs", "nonsense", "--out", tmp_path)
    assert_one_line_error(code, err, "unknown bug 'nonsense'", "`recipebench list bugs`")
    assert len(err.strip()) < 400, len(err)


def test_plugin_attribute_messages(plugins, tmp_path):
    """'bugs.pys' in the message, the imported base class Bug offered as a choice, and the
    internal module name of a plugin file in another message."""
    file = plugins / "bugs_bad.py"
    code, _, err = run_cli("run", "--bugs", f"{file}:Bugs", "--out", tmp_path)
    assert_one_line_error(code, err, f"{file} has no bug named 'Bugs'", "Did you mean 'MyBug'?")
    assert ".pys" not in err and "'Bug'" not in err and "Fields" not in err.split("Did you mean")[1]
    code, _, err = run_cli("run", "--bugs", f"{file}:Bug", "--out", tmp_path)
    assert_one_line_error(code, err, "is the base class", "MyBug")
    (tmp_path / "notabug.py").write_text("class NotABug:\n    name = 'x'\n")
    code, _, err = run_cli("run", "--bugs", f"{tmp_path / 'notabug.py'}:NotABug", "--out", tmp_path)
    assert_one_line_error(code, err, f"{tmp_path / 'notabug.py'}:NotABug is not a subclass")
    assert "recipebench_plugin_" not in err


def test_warnings_go_above_the_progress_bar(finished, tmp_path):
    """A warning raised while the bar is drawn (here: a damaged cache entry) was written
    into the bar's line; it is now a line of its own, ``recipebench: warning: ...``."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(finished / "cache", cache)
    for entry in (cache / "runs").iterdir():
        entry.write_bytes(entry.read_bytes()[:-5] + b"00000")
    code, _, err = _done(_cli("run", *[a for a in SMALL if a != "--quiet"], "--out", tmp_path / "out",
                              "--cache-dir", cache))
    assert code == 0, err
    warned = [line for line in err.split("\n") if "rejected" in line]
    assert warned, err
    for line in warned:
        assert line.rsplit("\r", 1)[-1].startswith("recipebench: warning: cache entry "), repr(line)
