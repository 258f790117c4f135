"""Malformed and misbehaving plugins: one clear message, or an error/timeout cell,
and the rest of the matrix completes with its results in the database."""
import textwrap

import pytest

from tests.test_cli import run_cli

BAD_DETECTORS = textwrap.dedent('''
    import ctypes, os, signal, time
    import torch
    from recipebench.detectors.base import Detector

    class Base(Detector):
        description = "misbehaving test detector"
        recipe_step = "none"
        stage, kind, cost = "training", "passive", 1

    class Raising(Base):
        name = "raising"
        def check(self, s):
            raise RuntimeError("boom")

    class Hanging(Base):
        name = "hanging"
        def check(self, s):
            time.sleep(60)

    class WrongType(Base):
        name = "wrong_type"
        def check(self, s):
            return 0.5

    class Exiting(Base):
        name = "exiting"
        def check(self, s):
            os._exit(3)

    class Segfault(Base):
        name = "segfault"
        def check(self, s):
            ctypes.string_at(0)  # reads address 0: SIGSEGV

    class OomKilled(Base):
        name = "oom_killed"
        def check(self, s):
            os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer sends

    class AllocationFails(Base):
        name = "allocation_fails"
        def check(self, s):
            return torch.empty(2**60)  # more memory than any machine has: the allocator refuses

    class NoCheck(Base):
        name = "no_check"
''')


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugins") / "bad_detectors.py"
    path.write_text(BAD_DETECTORS)
    return path


def test_misbehaving_detectors_become_cells(plugin_file, tmp_path):
    """Every kind of misbehaviour in one run; the traces are trained (and cached) first,
    so a short --timeout bites the hanging detector only (three times: in the pool and
    in the isolation pool for each job whose worker died)."""
    selection = ("--pipelines", "sequence", "--bugs", "view_instead_of_permute", "--seeds", "1", "--workers", "2",
                 "--quiet", "--cache-dir", str(tmp_path / "cache"))
    code, _, err = run_cli("run", *selection, "--detectors", "batch_dependency", "--out", str(tmp_path / "warm"))
    assert code == 0, err
    killers = ("Exiting", "Segfault", "OomKilled")
    dets = ",".join(f"{plugin_file}:{c}" for c in ("Raising", "Hanging", "WrongType", "AllocationFails", *killers))
    dets += ",batch_dependency"
    code, out, err = run_cli("run", *selection, "--detectors", dets, "--timeout", "3", "--out", str(tmp_path / "out"))
    assert code == 3, err  # the run completes; its error and timeout cells are in the exit code and the summary
    assert "FAILED: 14 of 16 detector results (12 error, 2 timeout)" in out
    from recipebench.harness.store import Store

    v = Store(tmp_path / "out" / "results.sqlite").verdicts().set_index(["variant", "seed", "detector"])
    for seed in (0,):
        for variant in ("clean", "view_instead_of_permute"):
            assert v.loc[(variant, seed, "raising")].outcome == "error"
            assert "RuntimeError: boom" in v.loc[(variant, seed, "raising")].evidence["message"]
            assert v.loc[(variant, seed, "hanging")].outcome == "timeout"
            assert v.loc[(variant, seed, "wrong_type")].outcome == "error"
            assert "returned float" in v.loc[(variant, seed, "wrong_type")].evidence["message"]
            assert v.loc[(variant, seed, "allocation_fails")].outcome == "error"
            assert "memory" in v.loc[(variant, seed, "allocation_fails")].evidence["message"].lower()
            for killer in ("exiting", "segfault", "oom_killed"):  # each isolated; only its own cell is lost
                assert v.loc[(variant, seed, killer)].outcome == "error"
                assert "worker process died" in v.loc[(variant, seed, killer)].evidence["message"]
        assert v.loc[("view_instead_of_permute", seed, "batch_dependency")].outcome == "flagged"
        assert v.loc[("clean", seed, "batch_dependency")].outcome == "passed"
    assert (tmp_path / "out" / "cells.csv").exists()
    page = (tmp_path / "out" / "matrix.html").read_text()  # failed cells read "error", not "n/a"
    assert page.count('title="error or timeout on 1 seed(s)"><a href="#sequence-clean-raising">error</a>') == 1


@pytest.mark.parametrize("spec,message", [
    ("NoCheck", "does not implement check"),
    ("Missing", "has no detector named 'Missing'"),
])
def test_malformed_detector_is_one_clear_error(plugin_file, spec, message, tmp_path):
    code, _, err = run_cli("run", "--detectors", f"{plugin_file}:{spec}", "--out", str(tmp_path))
    assert code == 2 and message in err and "Traceback" not in err


def test_syntax_error_plugin(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("class Oops(:\n")
    code, _, err = run_cli("run", "--bugs", f"{bad}:Oops", "--out", str(tmp_path / "o"))
    assert code == 2 and "cannot import bug file" in err and "SyntaxError" in err


def test_missing_plugin_file(tmp_path):
    code, _, err = run_cli("run", "--bugs", f"{tmp_path}/nope.py:X", "--out", str(tmp_path / "o"))
    assert code == 2 and "does not exist" in err


def test_bug_definition_errors(tmp_path):
    """check-bug validates the definition before running anything."""
    (tmp_path / "bugs_bad.py").write_text(textwrap.dedent('''
        from recipebench.bugs.base import Bug

        class Fields(Bug):
            name = "fields"
            description = "d"; recipe_step = "r"; source = "s"; family = "data"
            symptom = "final_metric"; expected_symptom = "e"

        class Duplicate(Fields):
            name = "view_instead_of_permute"
            def apply(self, p):
                return p

        class Nowhere(Fields):
            name = "nowhere"
            requires = frozenset({"sequence_model", "pretrained_backbone"})
            def apply(self, p):
                return p

        class NoSource(Fields):
            name = "no_source"
            source = ""
            def apply(self, p):
                return p

        class NotABug:
            name = "not_a_bug"
    '''))
    cases = {"Fields": "does not implement apply()", "Duplicate": "duplicate bug name 'view_instead_of_permute'",
             "Nowhere": "no selected pipeline offers them all", "NoSource": "missing required field(s): source",
             "NotABug": "is not a subclass of recipebench.bugs.base.Bug"}
    for cls, message in cases.items():
        code, _, err = run_cli("check-bug", f"{tmp_path}/bugs_bad.py:{cls}", "--out", str(tmp_path / "o"))
        assert code == 2 and message in err and "Traceback" not in err, (cls, err)
