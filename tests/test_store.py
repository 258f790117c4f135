"""A corrupted or truncated results database or cache entry is detected, reported
with a warning and recomputed, never silently trusted."""
import pytest

from recipebench.harness.cache import ResultCache
from recipebench.harness.store import Store

ROW = dict(pipeline="p", variant="clean", seed=0, key="k", metric=0.9, silent=True, error=None, warnings=[],
           probes={"x": 1.0}, seconds=0.1, curves={})


def test_garbage_database_is_moved_aside(tmp_path):
    db = tmp_path / "results.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.warns(UserWarning, match="failed its integrity check"):
        store = Store(db)
    store.write(ROW, [])
    assert store.run_keys() == {("p", "clean", 0): "k"}
    assert list(tmp_path.glob("results.corrupt-*"))


def test_truncated_database_is_detected(tmp_path):
    db = tmp_path / "results.sqlite"
    store = Store(db)
    for seed in range(200):
        store.write({**ROW, "seed": seed, "probes": {"x": float(seed)} | {f"pad{i}": 0.0 for i in range(50)}}, [])
    store.close()
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.warns(UserWarning, match="integrity check"):
        fresh = Store(db)
    assert fresh.run_keys() == {}  # nothing from the damaged file is trusted


def test_corrupted_cache_entry_is_recomputed(tmp_path):
    cache = ResultCache(tmp_path)
    cache.put("runs", "abc", ROW)
    assert cache.get("runs", "abc") == ROW
    path = tmp_path / "runs" / "abc.json"
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert cache.get("runs", "abc") is None
    assert not path.exists()
