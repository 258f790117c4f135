"""Fast answers (issue 26): `--help`, `list` and a bad name answer without importing
torch, from the catalog index (harness/catalog.py); a stale index is rebuilt. Before a
run: the seed-count warning, and a progress bar whose total is every job from the
start. Nothing here is timed (benchmarks/bench.py --startup has the figures); the
fast path is checked by what it imports."""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

from recipebench.harness import catalog, cli, runner
from recipebench.harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "scipy")  # what the fast path must not import


def cli_proc(*argv, cwd=None, env=None) -> tuple[int, str, str, set]:
    """``python -X importtime -m recipebench ARGV``: (exit code, stdout, stderr without
    the import lines, the top-level packages it imported)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "recipebench", *map(str, argv)],
                          capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300)
    imported, err = set(), []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:"):
            imported.add(line.rsplit("|", 1)[-1].strip().split(".")[0])
        else:
            err.append(line)
    return proc.returncode, proc.stdout, "\n".join(err), imported


def in_process(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def with_fresh_index(cache: Path, check, env=None, cwd=None, tries: int = 3):
    """Write the index with a slow command, then run ``check()``. Other work on this
    checkout may change a source file in between (the index is then rightly stale and
    the check takes the slow path): that is retried, anything else fails."""
    for attempt in range(tries):
        code, _, err, _ = cli_proc("list", "bugs", "--cache-dir", cache, env=env, cwd=cwd)
        assert code == 0, err
        try:
            return check()
        except AssertionError:
            if attempt == tries - 1 or catalog.read(cache)[0] is not None:
                raise


def stored(cache: Path) -> dict:
    """The index file's JSON (the line after its MAC)."""
    return json.loads((cache / catalog.FILE).read_bytes().partition(b"\n")[2])


def test_help_and_argument_errors_import_nothing_heavy():
    for argv in (["--help"], ["run", "--help"], ["list", "--help"]):
        code, out, err, imported = cli_proc(*argv)
        assert code == 0 and "usage: recipebench" in out, err
        assert not imported & set(HEAVY), (argv, imported & set(HEAVY))
    code, _, err, imported = cli_proc("run", "--seeds", "0")
    assert code == 2 and err == ("recipebench: error: argument --seeds: must be between 1 and 1000, got 0 "
                                 "(see `recipebench run --help`)")
    assert not imported & set(HEAVY)


def test_bad_names_and_lists_answer_from_a_fresh_index(tmp_path):
    cache = tmp_path / "cache"
    cases = [(("run", "--bugs", "view_instead_of_permut"), "Did you mean 'view_instead_of_permute'?"),
             (("run", "--detectors", "batch_dependence"), "Did you mean 'batch_dependency'?"),
             (("run", "--bugs", ""), "--bugs '' selects no bug"),
             (("run", "--bugs", "none,typo"), "--bugs none means clean runs only"),
             (("check-bug", "view_instead_of_permut"), "Did you mean 'view_instead_of_permute'?"),
             (("eval-detector", "batch_dependence"), "Did you mean 'batch_dependency'?"),
             (("eval-detector", "metric_drop", "--bugs", "typo"), "unknown bug 'typo'")]

    def check():
        assert (cache / catalog.FILE).is_file()
        for argv, needle in cases:
            code, _, err, imported = cli_proc(*argv, "--cache-dir", cache, "--out", tmp_path / "out")
            assert code == 2 and err.startswith("recipebench: error: ") and needle in err and "\n" not in err, err
            assert not imported & set(HEAVY), (argv, imported & set(HEAVY))
            slow_code, _, slow_err = in_process(*argv, "--cache-dir", tmp_path / "none", "--out", tmp_path / "out")
            assert (code, err) == (slow_code, slow_err.strip())  # what the imported registries answer
        for what in ("bugs", "detectors", "pipelines"):
            for fmt in ("table", "csv", "json"):
                code, out, err, imported = cli_proc("list", what, "--format", fmt, "--cache-dir", cache)
                assert code == 0 and not imported & set(HEAVY), (what, fmt, err, imported & set(HEAVY))
                assert out == in_process("list", what, "--format", fmt, "--cache-dir", tmp_path / "none")[1]

    with_fresh_index(cache, check)
    assert not (tmp_path / "out").exists()


def test_csv_is_what_pandas_writes():
    for what in ("bugs", "detectors", "pipelines"):
        rows = cli.list_rows(what)
        assert cli._csv(rows) == pd.DataFrame(rows).to_csv(index=False, lineterminator="\n")
    tricky = [dict(name='a "quoted", name', text="two\nlines", n=3, none=None, empty="")]
    assert cli._csv(tricky) == pd.DataFrame(tricky).to_csv(index=False, lineterminator="\n")


@pytest.mark.parametrize("damage", ["malformed", "forged"])
def test_index_holds_json_only_and_a_damaged_or_forged_one_is_ignored(damage, tmp_path):
    cache = tmp_path / "cache"
    code, _, err, _ = cli_proc("list", "detectors", "--cache-dir", cache)
    assert code == 0, err
    index = stored(cache)
    assert set(index["bug"]["entries"]) >= {"view_instead_of_permute", "wrong_normalization_mean"}
    assert index["detector"]["entries"]["cleanlab"]["peer"] is True
    key = index.pop("key")
    if damage == "malformed":  # signed with the user's secret, today's key, the wrong shape
        index["bug"]["entries"] = "not a mapping"
        catalog.write(cache, key, index)
    else:  # well formed, but written by someone without the secret: a valid bug hidden
        del index["bug"]["entries"]["view_instead_of_permute"]
        index["bug"]["rows"] = [r for r in index["bug"]["rows"] if r["name"] != "view_instead_of_permute"]
        payload = json.dumps(dict(index, key=key)).encode()
        (cache / catalog.FILE).write_bytes(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    assert catalog.read(cache)[0] is None
    code, _, err, imported = cli_proc("run", "--bugs", "view_instead_of_permut", "--cache-dir", cache,
                                      "--out", tmp_path / "out")
    assert code == 2 and "Did you mean 'view_instead_of_permute'?" in err and "torch" in imported
    assert catalog.stored_key(cache) is not None  # rewritten whole


def test_views_defer_what_only_the_registries_know():
    index = {"entries": {"digits": dict(peer=False, in_default_run=True, control=False, severities=["default"])},
             "resolvers": [r"pop_[ct]\d{4,}"], "rows": [{"name": "digits"}]}
    view = catalog.View("pipeline", index)
    assert view.resolve("digits") == "digits"
    with pytest.raises(cli.RegistryError, match="Did you mean 'digits'"):
        view.resolve("digit")
    for deferred in ("pop_t0042", "plugin.py:make"):  # a resolver's name, a file plugin
        with pytest.raises(catalog.Defer):
            view.resolve(deferred)
    with pytest.raises(catalog.Defer):  # an unknown severity: the Bug class words the error
        view.get("digits")("huge")
    view = catalog.View("pipeline", dict(index, resolvers=[None]))  # a resolver that declares no pattern
    with pytest.raises(catalog.Defer):
        view.resolve("digit")


def _package_copy(root: Path) -> Path:
    """A copy of the recipebench package laid out as an installed one (``recipebench/``
    with ``bugs/``, ``detectors/``, ``harness/`` inside), importable through PYTHONPATH."""
    pkg = root / "recipebench"
    shutil.copytree(ROOT / "recipebench", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("bugs", "detectors", "harness"):
        shutil.copytree(ROOT / folder, pkg / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_a_changed_bug_file_makes_the_index_stale_and_it_is_rebuilt(tmp_path):
    copy = _package_copy(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=str(copy))
    cache = tmp_path / "cache"

    def check():
        code, _, err, imported = cli_proc("run", "--bugs", "zz_new_bu", "--cache-dir", cache, env=env, cwd=tmp_path)
        assert code == 2 and "unknown bug 'zz_new_bu'" in err and not imported & set(HEAVY), err

    with_fresh_index(cache, check, env=env, cwd=tmp_path)
    before = stored(cache)
    (copy / "recipebench" / "bugs" / "zz_new.py").write_text(textwrap.dedent('''
        from recipebench.bugs.base import register_bug
        from recipebench.bugs.data import WrongNormalizationMean


        @register_bug
        class NewBug(WrongNormalizationMean):
            name = "zz_new_bug"
    '''))
    code, _, err, imported = cli_proc("run", "--bugs", "zz_new_bu", "--cache-dir", cache, env=env, cwd=tmp_path)
    assert code == 2 and "Did you mean 'zz_new_bug'?" in err and "torch" in imported, err  # stale: slow path
    after = stored(cache)
    assert after["key"] != before["key"] and "zz_new_bug" in after["bug"]["entries"]
    code, _, err, imported = cli_proc("run", "--bugs", "zz_new_bu", "--cache-dir", cache, env=env, cwd=tmp_path)
    assert code == 2 and "Did you mean 'zz_new_bug'?" in err and not imported & set(HEAVY), err  # fresh again
    code, out, err, imported = cli_proc("list", "bugs", "--format", "json", "--cache-dir", cache, env=env,
                                        cwd=tmp_path)
    assert code == 0 and "zz_new_bug" in {r["name"] for r in json.loads(out)} and not imported & set(HEAVY)


def test_a_file_plugin_never_enters_the_index(tmp_path):
    plugin = tmp_path / "extra.py"
    plugin.write_text(textwrap.dedent('''
        from recipebench.bugs.base import register_bug
        from recipebench.bugs.data import WrongNormalizationMean


        class PluginBug(WrongNormalizationMean):
            name = "plugin_only_bug"
    '''))
    cache = tmp_path / "cache"
    code, _, err, _ = cli_proc("run", "--bugs", f"{plugin}:PluginBug,typo", "--cache-dir", cache,
                               "--out", tmp_path / "out")
    assert code == 2 and "unknown bug 'typo'" in err, err
    assert "plugin_only_bug" not in stored(cache)["bug"]["entries"]
    bugs = cli.BUGS.load()  # loaded into this process's registry, still not indexed
    saved = dict(bugs._entries)
    try:
        bugs.load_path(f"{plugin}:PluginBug")
        assert "plugin_only_bug" in bugs.names()
        index = catalog.build({kind: r.load() for kind, r in cli.REGISTRIES.items()}, cli.list_row)
        assert "plugin_only_bug" not in index["bug"]["entries"]
        assert "wrong_normalization_mean" in index["bug"]["entries"]
    finally:
        bugs._entries.clear()
        bugs._entries.update(saved)


# ------------------------------------------------------------------ before a run starts

class _Stop(Exception):
    pass


def _stop(*args, **kwargs):
    raise _Stop()


@pytest.mark.parametrize("seeds,warned", [(3, True), (4, False)])
def test_a_seed_count_that_cannot_reach_significance_is_warned_of(seeds, warned, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_matrix", _stop)  # stop where the run starts
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()), pytest.raises(_Stop):
        main(["run", "--pipelines", "digits", "--bugs", "wrong_normalization_mean", "--detectors", "input_stats",
              "--seeds", str(seeds), "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    lines = [line for line in err.getvalue().strip().splitlines() if "warning" in line]
    if warned:
        assert len(lines) == 1 and lines[0].startswith("recipebench: warning: 3 seeds cannot mark any detector "
                                                       "caught") and "p = 0.05" in lines[0], lines
        assert "--seeds 4 or more" in lines[0]
    else:
        assert lines == []


def test_no_seed_warning_for_clean_runs_only(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_matrix", _stop)
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()), pytest.raises(_Stop):
        main(["run", "--pipelines", "digits", "--bugs", "none", "--detectors", "input_stats", "--seeds", "2",
              "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    assert "warning" not in err.getvalue()
    assert cli.fewest_seeds() == 4


def test_progress_total_is_every_job_from_the_start(tmp_path, monkeypatch):
    """The bar is created with the total of both phases; clean runs still go first."""
    bars, batches = [], []

    class Recording(runner.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)
            self.totals = [self.total]

        def update(self, n=1):
            self.totals.append(self.total)
            return super().update(n)

    run = runner.Executor.run

    def recording_run(self, jobs, on_result, progress):
        batches.append([(j.variant, j.record_run) for j in jobs])
        return run(self, jobs, on_result, progress)

    monkeypatch.setattr(runner, "tqdm", Recording)
    monkeypatch.setattr(runner.Executor, "run", recording_run)
    selection = ["--pipelines", "digits", "--bugs", "wrong_normalization_mean", "--detectors",
                 "input_stats,metric_drop", "--workers", "1", "--cache-dir", tmp_path / "c"]
    for seeds, out in (("2", "a"), ("3", "b")):  # cold; then one more seed: clean seed 2 is new, so the
        batches.clear()                            # reference of every seed, and metric_drop's keys, change
        code, _, err = in_process("run", *selection, "--seeds", seeds, "--out", tmp_path / out)
        assert code == 0, err
        bar = bars[-1]
        planned = sum(map(len, batches))
        assert set(bar.totals) == {planned} and bar.n == planned, (bar.totals, bar.n, planned)
        assert batches[0] and all(variant == "clean" for variant, _ in batches[0])
        assert {variant for variant, _ in batches[1]} == {"clean", "wrong_normalization_mean"}
    assert planned == 1 + 3 + 3  # clean run of seed 2; metric_drop (a new reference) on seeds 0-2, bug and clean
