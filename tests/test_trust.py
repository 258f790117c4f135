"""Nothing read from disk runs code, a cache entry is used only for its own key and
only when authenticated with the user's cache key (a writer of the cache directory
cannot forge one), an unusable cache or a failed run costs no more than its own cells,
failures are retried, and the results database is versioned (design.md, "Trust")."""
import hashlib
import hmac
import json
import math
import pickle
import sqlite3
import stat
import warnings
from dataclasses import fields
from pathlib import Path

import pytest

from recipebench.harness import runner
from recipebench.harness.cache import ResultCache
from recipebench.harness.cli import main
from recipebench.harness.runner import Config, plan, run_matrix
from recipebench.harness.store import SCHEMA_VERSION, Store
from recipebench.harness.trace import Trace

ROW = dict(pipeline="p", variant="clean", seed=0, key="k1", metric=0.9, silent=True, error=None, warnings=[],
           probes={"x": 1.0, "nan": math.nan, "inf": math.inf}, seconds=0.1, curves={})
SMALL = ["--pipelines", "digits", "--bugs", "wrong_normalization_mean", "--detectors", "input_stats,metric_drop",
         "--workers", "1", "--quiet"]
CONFIG = Config(pipelines=("digits",), variants=("wrong_normalization_mean",), detectors=("input_stats", "metric_drop"),
                seeds=(0, 1), workers=1)
# the results schema before versioning (user_version 0), verbatim
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    pipeline TEXT, variant TEXT, seed INTEGER, key TEXT,
    metric REAL, silent INTEGER, error TEXT, warnings TEXT, probes TEXT, seconds REAL, curves TEXT,
    PRIMARY KEY (pipeline, variant, seed));
CREATE TABLE IF NOT EXISTS verdicts (
    pipeline TEXT, variant TEXT, seed INTEGER, detector TEXT, key TEXT,
    outcome TEXT, score REAL, evidence TEXT, steps INTEGER, seconds REAL,
    PRIMARY KEY (pipeline, variant, seed, detector));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


@pytest.fixture(autouse=True)
def cache_key(tmp_path_factory, monkeypatch):
    """A cache key of the test's own, outside every cache directory the tests use."""
    path = tmp_path_factory.mktemp("key") / "cache.key"
    monkeypatch.setenv("RECIPEBENCH_CACHE_KEY_FILE", str(path))
    return path


def forge(path: Path, edit) -> None:
    """What a writer of the cache directory can do without the key: edit the payload and
    recompute every checksum computable from the file alone (the sha256 that format 2
    trusted; an HMAC under a key of their own)."""
    head, payload = path.read_bytes().split(b"\n", 1)
    header = json.loads(head)
    data = json.loads(payload)
    edit(data)
    payload = json.dumps(data, separators=(",", ":")).encode()
    kind, key = header["kind"], header["key"]
    if "sha256" in header:
        header["sha256"] = hashlib.sha256(f"{kind}\n{key}\n".encode() + payload).hexdigest()
    if "hmac" in header:
        message = f"{header['format']}\n{kind}\n{key}\n{header['type']}\n".encode() + payload
        header["hmac"] = hmac.new(b"a key of the forger's own" * 2, message, hashlib.sha256).hexdigest()
    path.write_bytes(json.dumps(header, sort_keys=True).encode() + b"\n" + payload)


class Planted:
    """Unpickling this creates ``path``: proof that loading ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _entry(cache: ResultCache, kind: str) -> Path:
    (path,) = (cache.root / kind).iterdir()
    return path


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True, default=repr)


def test_planted_pickle_runs_nothing_and_is_not_used(tmp_path):
    marker = tmp_path / "code-ran"
    evil = pickle.dumps(Planted(marker))
    cache = ResultCache(tmp_path / "cache")
    for kind in ("runs", "verdicts", "traces"):
        (cache.root / kind).mkdir(parents=True)
        # where the old pickle cache looked (sha256 of the payload, then the payload) ...
        (cache.root / kind / "k1.pkl").write_bytes(hashlib.sha256(evil).hexdigest().encode() + evil)
        # ... and where the data-only cache looks: a pickle, then JSON not written by the cache
        (cache.root / kind / "k1.json").write_bytes(evil)
        (cache.root / kind / "k2.json").write_text(json.dumps({**ROW, "key": "k2"}))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for kind in ("runs", "verdicts", "traces"):
            assert cache.get(kind, "k1") is None
            assert cache.get(kind, "k2") is None
    assert not marker.exists()


def test_entry_copied_onto_another_key_is_rejected(tmp_path):
    cache = ResultCache(tmp_path)
    trace = Trace(loss=[1.0, math.nan, math.inf], grad_norm={"w": [0.5, -math.inf]}, metric=math.nan, error=None)
    cache.put("runs", "k1", ROW)
    cache.put("traces", "t1", trace)
    for kind, key, other in (("runs", "k1", "k2"), ("traces", "t1", "t2")):
        path = _entry(cache, kind)
        copy = path.with_name(path.name.replace(key, other))
        copy.write_bytes(path.read_bytes())
        with pytest.warns(UserWarning, match=f"holds {kind}/{key}, not {kind}/{other}"):
            assert cache.get(kind, other) is None
        assert not copy.exists()  # deleted, recomputed next time
    assert _same(cache.get("runs", "k1"), ROW)  # the genuine entries still load, NaN and inf included
    loaded = cache.get("traces", "t1")
    assert isinstance(loaded, Trace) and all(_same(getattr(loaded, f.name), getattr(trace, f.name))
                                             for f in fields(Trace))


def test_trace_entry_is_json_and_must_match_the_trace_fields(tmp_path, cache_key):
    cache = ResultCache(tmp_path)
    cache.put("traces", "t1", Trace(loss=[0.1], metric=math.inf))
    path = _entry(cache, "traces")
    assert path.suffix == ".json"
    head, payload = path.read_bytes().split(b"\n", 1)
    header = json.loads(head)
    assert (header["kind"], header["key"]) == ("traces", "t1")
    # a well-formed entry (right key, authenticated with the user's key) for a Trace with a field less: rejected
    data = json.loads(payload)
    del data["metric"]
    payload = json.dumps(data).encode()
    secret = cache_key.read_text().strip().encode()
    header["hmac"] = hmac.new(secret, f"{header['format']}\ntraces\nt1\nTrace\n".encode() + payload,
                              hashlib.sha256).hexdigest()
    path.write_bytes(json.dumps(header).encode() + b"\n" + payload)
    with pytest.warns(UserWarning, match="not Trace's"):
        assert cache.get("traces", "t1") is None


def test_unusable_cache_dir_gives_one_warning_and_correct_results(tmp_path):
    # chmod cannot make a directory read-only for root (the tests may run as root), so the
    # cache is made unusable another way that also holds in the spawned workers: each kind
    # directory is a plain file, so every read (NotADirectoryError) and every write
    # (FileExistsError from mkdir) fails, as they would on a read-only cache
    cache = tmp_path / "cache"
    cache.mkdir()
    for kind in ("runs", "verdicts", "traces"):
        (cache / kind).write_text("not a directory")
    store = Store(tmp_path / "out" / "results.sqlite")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_matrix(CONFIG, store, str(cache), progress=False)
    about_cache = [str(w.message) for w in caught if "result cache" in str(w.message)]
    assert len(about_cache) == 1 and "without caching" in about_cache[0], about_cache
    runs, verdicts = store.runs(), store.verdicts()
    assert len(runs) == 4 and runs["error"].isna().all() and runs["metric"].between(0.5, 1).all()
    assert len(verdicts) == 8 and not verdicts["outcome"].isin(["error", "timeout"]).any()
    flagged = verdicts.query("detector == 'input_stats'").set_index("variant")["outcome"]
    assert (flagged["wrong_normalization_mean"] == "flagged").all() and (flagged["clean"] == "passed").all()


def _rows(db):
    con = sqlite3.connect(db)
    try:
        return (con.execute("SELECT variant, seed, metric, error FROM runs").fetchall(),
                dict(((v, s, d), o) for v, s, d, o in con.execute("SELECT variant, seed, detector, outcome FROM verdicts")))
    finally:
        con.close()


def test_run_recovers_after_clean_runs_time_out(tmp_path):
    args = [*SMALL, "--seeds", "3", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert main(["run", *args, "--timeout", "0.01"]) == 3  # every training run times out: exit code 3
    runs, verdicts = _rows(tmp_path / "out" / "results.sqlite")
    assert runs and all(error and "timed out" in error for *_, error in runs)
    assert {o for (_, _, d), o in verdicts.items() if d == "metric_drop"} <= {"error", "not_applicable"}

    assert main(["run", *args, "--timeout", "120"]) == 0  # the same output directory recovers
    runs, verdicts = _rows(tmp_path / "out" / "results.sqlite")
    assert len(runs) == 6 and all(error is None and 0.5 < metric <= 1 for _, _, metric, error in runs)
    assert len(verdicts) == 12 and not {"error", "timeout", "not_applicable"} & set(verdicts.values())


def test_failed_cells_are_redone_unless_keep_failures(tmp_path):
    store, cache = Store(tmp_path / "results.sqlite"), ResultCache(tmp_path / "cache")
    jobs = plan(CONFIG, store, cache, 1)
    assert [(j.variant, j.seed, j.record_run, len(j.detectors)) for j in jobs] == [("clean", 0, True, 1),
                                                                                 ("clean", 1, True, 1)]

    def write(job, error, outcome):
        store.write(dict(pipeline=job.pipeline, variant=job.variant, seed=job.seed, key=job.trace_key, metric=math.nan,
                         silent=False, error=error, warnings=[], probes={}, seconds=0.0),
                    [dict(pipeline=job.pipeline, variant=job.variant, seed=job.seed, detector=d, key=k, outcome=outcome,
                          score=math.nan, evidence={}, steps=None, seconds=0.0) for d, k in job.detectors])

    write(jobs[0], "training timed out after 0.01s", "error")
    write(jobs[1], None, "timeout")
    again = plan(CONFIG, store, cache, 1)
    assert [(j.seed, j.record_run, len(j.detectors)) for j in again] == [(0, True, 1), (1, False, 1)]
    kept = Config(**{**CONFIG.__dict__, "keep_failures": True})
    assert plan(kept, store, cache, 1) == []
    # the failed clean runs stored NULL metrics: left out of the reference, no crash
    assert store.clean_metrics("digits") == {}
    phase2 = plan(CONFIG, store, cache, 2, {0: None, 1: math.nan})
    assert phase2 and all(j.reference == () for j in phase2)
    write(jobs[0], None, "passed")
    assert [j.seed for j in plan(CONFIG, store, cache, 1)] == [1]


def test_v1_database_is_migrated_in_place(tmp_path):
    db = tmp_path / "results.sqlite"
    con = sqlite3.connect(db)
    con.executescript(SCHEMA_V1)
    con.execute("INSERT INTO runs VALUES ('p','clean',0,'k',0.9,1,NULL,'[]','{}',0.1,'{}')")
    con.commit()
    con.close()
    store = Store(db)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    store.write({**ROW, "seed": 1, "key": "k2", "reported_metric": 0.8}, [])
    runs = store.runs().set_index("seed")
    assert runs.loc[0, "metric"] == 0.9 and math.isnan(runs.loc[0, "reported_metric"])
    assert runs.loc[1, "reported_metric"] == 0.8
    store.close()
    assert Store(db).run_keys() == {("p", "clean", 0): "k", ("p", "clean", 1): "k2"}  # reopening is a no-op


@pytest.mark.parametrize("make", ["newer", "foreign"])
def test_unknown_database_is_refused_before_training(tmp_path, capsys, monkeypatch, make):
    db = tmp_path / "out" / "results.sqlite"
    db.parent.mkdir()
    con = sqlite3.connect(db)
    if make == "newer":
        con.executescript(SCHEMA_V1)
        con.execute("PRAGMA user_version = 99")
    else:
        con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
    con.commit()
    con.close()
    before = db.read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(runner, "run_matrix", no_training)
    rc = main(["run", *SMALL, "--seeds", "2", "--out", str(db.parent), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert ("schema version 99" if make == "newer" else "not a recipebench results database") in err
    assert db.read_bytes() == before  # left as it was


def test_code_key_follows_the_helpers_a_module_imports(tmp_path, monkeypatch):
    """A cached verdict is keyed on its detector's module and the same-package modules it
    pulls names from, its package's ``__init__`` included (the peers' ``clean_reference``
    lives there): editing such a helper invalidates the verdicts that use it; editing a
    module it does not use does not."""
    import importlib
    import sys

    from recipebench.harness import cache

    pkg = tmp_path / "keypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("def helper():\n    return 1\n")
    (pkg / "common.py").write_text("def shared():\n    return 1\n")
    (pkg / "other.py").write_text("X = 1\n")
    (pkg / "adapter.py").write_text("from keypkg import helper\nfrom keypkg.common import shared\n\n\n"
                                    "class Adapter:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def forget() -> None:  # import the edited package afresh
        for name in [m for m in sys.modules if m == "keypkg" or m.startswith("keypkg.")]:
            del sys.modules[name]
        importlib.invalidate_caches()

    def key() -> str:
        forget()
        return cache.code_key(importlib.import_module("keypkg.adapter").Adapter)

    first = key()
    (pkg / "other.py").write_text("X = 22\n")
    assert key() == first
    (pkg / "__init__.py").write_text("def helper():\n    return 22\n")
    second = key()
    assert second != first
    (pkg / "common.py").write_text("def shared():\n    return 22\n")
    assert key() != second
    forget()


def test_forged_entry_is_rejected_and_recomputed(tmp_path, capsys):
    """An entry edited and re-checksummed by whoever can write the cache directory (a
    metric changed to 0.123 moved a bug's delta from -0.014 to -0.843) was used
    silently; without the user's key it cannot be authenticated, so it is ignored with a
    warning and recomputed."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [*SMALL, "--seeds", "2", "--detectors", "input_stats", "--cache-dir", str(cache)]
    assert main(["run", *args, "--out", str(out)]) == 0
    genuine = dict(((v, s), m) for v, s, m, _ in _rows(out / "results.sqlite")[0])
    entries = sorted((cache / "runs").iterdir())
    for entry in entries:
        forge(entry, lambda row: row.update(metric=0.123))
    capsys.readouterr()
    assert main(["run", *args, "--out", str(tmp_path / "again")]) == 0
    rejected = [line for line in capsys.readouterr().err.splitlines() if "rejected" in line]
    assert len(rejected) == len(entries) == 4 and all("checksum mismatch" in m for m in rejected), rejected
    again = dict(((v, s), m) for v, s, m, _ in _rows(tmp_path / "again" / "results.sqlite")[0])
    assert again == genuine and 0.123 not in again.values()


def test_cache_key_is_private_and_outside_the_cache(tmp_path, cache_key):
    """Created on first use with mode 0600 where $RECIPEBENCH_CACHE_KEY_FILE points (by
    default ~/.config/recipebench/cache.key), never inside the cache directory; an entry
    written under another key (another user's, or a forger's) is not used."""
    assert not cache_key.exists()
    cache = ResultCache(tmp_path / "cache")
    assert cache.put("runs", "k1", ROW)
    assert stat.S_IMODE(cache_key.stat().st_mode) == 0o600 and len(cache_key.read_text().strip()) == 64
    assert not any(p.name == cache_key.name for p in (tmp_path / "cache").rglob("*"))
    assert _same(ResultCache(tmp_path / "cache").get("runs", "k1"), ROW)  # the same key is read back
    other = tmp_path / "other.key"
    other.write_text("ab" * 32 + "\n")
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert ResultCache(tmp_path / "cache", key_file=other).get("runs", "k1") is None


def test_unusable_cache_key_means_no_caching_with_one_warning(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    cache = ResultCache(tmp_path / "cache", key_file=bad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.put("runs", "k1", ROW) is False and cache.get("runs", "k1") is None
    assert [str(w.message) for w in caught if str(bad) in str(w.message)] == [
        f"cache key file {bad} cannot be used (it does not hold a key (at least 32 hex digits); delete it to have a "
        f"new one made); going on without caching (set RECIPEBENCH_CACHE_KEY_FILE to a file you can write)"]
    assert bad.read_text() == "not a key\n" and not (tmp_path / "cache").exists()
