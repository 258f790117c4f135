"""The results database: SQLite, one row per run and per verdict, written as each
job finishes so an interrupted matrix resumes where it stopped."""
from __future__ import annotations

import json
import shutil
import sqlite3
import warnings
from pathlib import Path

import pandas as pd

SCHEMA = """
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


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path.exists():
            problem = _integrity_problem(self.path)
            if problem:
                bad = self.path.with_suffix(".corrupt")
                shutil.move(self.path, bad)
                warnings.warn(f"results database {self.path} failed its integrity check ({problem}); "
                              f"moved to {bad} and starting a fresh one", stacklevel=3)
        db = sqlite3.connect(self.path)
        db.executescript(SCHEMA)
        return db

    def close(self) -> None:
        self.db.close()

    # ---- writes (one transaction per finished job) ---------------------------
    def write(self, run: dict | None, verdicts: list[dict]) -> None:
        with self.db:
            if run is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (run["pipeline"], run["variant"], run["seed"], run["key"], run["metric"], int(run["silent"]),
                     run["error"], json.dumps(run["warnings"]), json.dumps(run["probes"]), run["seconds"],
                     json.dumps(run.get("curves", {}))))
            self.db.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(v["pipeline"], v["variant"], v["seed"], v["detector"], v["key"], v["outcome"], v["score"],
                  json.dumps(v["evidence"], sort_keys=True), v["steps"], v["seconds"]) for v in verdicts])

    def set_meta(self, **items) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)",
                                [(k, json.dumps(v, sort_keys=True)) for k, v in items.items()])

    # ---- reads -----------------------------------------------------------------
    def run_keys(self) -> dict:
        return {(p, v, s): k for p, v, s, k in self.db.execute("SELECT pipeline, variant, seed, key FROM runs")}

    def verdict_keys(self) -> dict:
        return {(p, v, s, d): k for p, v, s, d, k in
                self.db.execute("SELECT pipeline, variant, seed, detector, key FROM verdicts")}

    def clean_metrics(self, pipeline: str) -> dict[int, float]:
        rows = self.db.execute("SELECT seed, metric FROM runs WHERE pipeline=? AND variant='clean'", (pipeline,))
        return dict(rows)

    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def runs(self) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM runs ORDER BY pipeline, variant, seed", self.db)
        df["probes"] = df["probes"].map(json.loads)
        df["warnings"] = df["warnings"].map(json.loads)
        df["curves"] = df["curves"].map(lambda c: json.loads(c) if c else {})
        return df

    def verdicts(self) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM verdicts ORDER BY pipeline, variant, seed, detector", self.db)
        df["evidence"] = df["evidence"].map(json.loads)
        return df


def _integrity_problem(path: Path) -> str | None:
    try:
        db = sqlite3.connect(path)
        try:
            (result,) = db.execute("PRAGMA integrity_check").fetchone()
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if result == "ok" else result
