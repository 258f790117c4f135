"""The results database: SQLite, one row per run and per verdict, written as each
job finishes so an interrupted matrix resumes where it stopped.

The schema is versioned with ``PRAGMA user_version`` (0, never set, is schema 1). An
older database is migrated in place when opened; a newer one, or a database that is
not a recipebench results database, is refused (:class:`StoreVersionError`) before
anything runs.

A database that fails SQLite's integrity check is moved aside to
``results.corrupt-<UTC time>.sqlite`` (never over an earlier one) and a fresh one is
started. A write that fails on a full or read-only disk raises
:class:`~recipebench.harness.diskio.StorageError` (one line: the file and the free
space); the failed transaction is rolled back and every finished row is kept."""
from __future__ import annotations

import json
import math
import shutil
import sqlite3
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from recipebench.harness.diskio import StorageError, storage_error
from recipebench.harness.registry import RegistryError

SCHEMA_VERSION = 2  # PRAGMA user_version; 0 (never set) is schema 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    pipeline TEXT, variant TEXT, seed INTEGER, key TEXT,
    metric REAL, silent INTEGER, error TEXT, warnings TEXT, probes TEXT, seconds REAL, curves TEXT,
    reported_metric REAL,
    PRIMARY KEY (pipeline, variant, seed));
CREATE TABLE IF NOT EXISTS verdicts (
    pipeline TEXT, variant TEXT, seed INTEGER, detector TEXT, key TEXT,
    outcome TEXT, score REAL, evidence TEXT, steps INTEGER, seconds REAL,
    PRIMARY KEY (pipeline, variant, seed, detector));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
RUN_COLUMNS = ("pipeline", "variant", "seed", "key", "metric", "silent", "error", "warnings", "probes", "seconds",
               "curves", "reported_metric")
VERDICT_COLUMNS = ("pipeline", "variant", "seed", "detector", "key", "outcome", "score", "evidence", "steps",
                   "seconds")
# the columns of each table at each schema version; a database whose tables differ is not ours
TABLES = {1: {"runs": RUN_COLUMNS[:-1], "verdicts": VERDICT_COLUMNS, "meta": ("key", "value")},
          2: {"runs": RUN_COLUMNS, "verdicts": VERDICT_COLUMNS, "meta": ("key", "value")}}
FAILED_OUTCOMES = ("error", "timeout")
# SQLite's primary result codes for a file that cannot be written: READONLY, IOERR, FULL, CANTOPEN
STORAGE_CODES = {8, 10, 13, 14}
UNWRITABLE_CODES = {8, 13, 14}  # a damaged file can give IOERR on reading; these say the disk is at fault
STORAGE_MESSAGES = ("readonly", "disk i/o", "disk is full", "unable to open")


class StoreVersionError(RegistryError):
    """A results database this version cannot use: written by a newer recipebench
    (unknown schema version) or not a recipebench database at all."""


def _is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the database file cannot be written (full, read-only, I/O),
    as opposed to a mistake in recipebench's own SQL."""
    if isinstance(exc, OSError):
        return True
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in STORAGE_CODES
    return any(m in str(exc).lower() for m in STORAGE_MESSAGES)


def quarantine(path: Path) -> Path:
    """Move a damaged database to ``<stem>.corrupt-<UTC time><suffix>``, numbered when
    that name is taken: an earlier quarantined file is never replaced."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    bad, n = path.with_name(f"{path.stem}.corrupt-{stamp}{path.suffix}"), 1
    while bad.exists():
        n += 1
        bad = path.with_name(f"{path.stem}.corrupt-{stamp}-{n}{path.suffix}")
    try:
        shutil.move(path, bad)
    except OSError as exc:
        raise storage_error(bad, exc) from None
    return bad


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        with self._storage():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._open()

    @contextmanager
    def _storage(self):
        """A failed write of the database file becomes :class:`StorageError`."""
        try:
            yield
        except StorageError:
            raise
        except (sqlite3.Error, OSError) as exc:
            if _is_storage_error(exc):
                raise storage_error(self.path, exc) from None
            raise

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path)

    def _open(self) -> sqlite3.Connection:
        if self.path.exists():
            problem = _integrity_problem(self.path)
            if problem:
                bad = quarantine(self.path)
                warnings.warn(f"results database {self.path} failed its integrity check ({problem}); "
                              f"moved to {bad} and starting a fresh one", stacklevel=3)
        db = self._connect()
        try:
            _migrate(db, self.path)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        self.db.close()

    # ---- writes (one transaction per finished job) ---------------------------
    def write(self, run: dict | None, verdicts: list[dict]) -> None:
        with self._storage(), self.db:
            if run is not None:
                self.db.execute(
                    f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                    (run["pipeline"], run["variant"], run["seed"], run["key"], run["metric"], int(run["silent"]),
                     run["error"], json.dumps(run["warnings"]), json.dumps(run["probes"]), run["seconds"],
                     json.dumps(run.get("curves", {})), run.get("reported_metric")))
            self.db.executemany(
                f"INSERT OR REPLACE INTO verdicts ({', '.join(VERDICT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(VERDICT_COLUMNS))})",
                [(v["pipeline"], v["variant"], v["seed"], v["detector"], v["key"], v["outcome"], v["score"],
                  json.dumps(v["evidence"], sort_keys=True), v["steps"], v["seconds"]) for v in verdicts])

    def set_meta(self, **items) -> None:
        with self._storage(), self.db:
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)",
                                [(k, json.dumps(v, sort_keys=True)) for k, v in items.items()])

    # ---- reads -----------------------------------------------------------------
    def run_keys(self, failed: bool = True) -> dict:
        """(pipeline, variant, seed) -> key of every run row; without the rows whose run
        failed (``error`` set) when ``failed`` is False, so that those are redone."""
        where = "" if failed else " WHERE error IS NULL"
        rows = self.db.execute(f"SELECT pipeline, variant, seed, key FROM runs{where}")
        return {(p, v, s): k for p, v, s, k in rows}

    def verdict_keys(self, failed: bool = True) -> dict:
        """(pipeline, variant, seed, detector) -> key of every verdict row; without the
        ``error`` and ``timeout`` cells when ``failed`` is False."""
        where = "" if failed else f" WHERE outcome NOT IN ({', '.join('?' * len(FAILED_OUTCOMES))})"
        return {(p, v, s, d): k for p, v, s, d, k in self.db.execute(
            f"SELECT pipeline, variant, seed, detector, key FROM verdicts{where}", () if failed else FAILED_OUTCOMES)}

    def clean_metrics(self, pipeline: str) -> dict[int, float]:
        """seed -> metric of the clean runs that finished with a finite metric (a failed
        run stores NULL: SQLite keeps NaN as NULL), the reference for other seeds."""
        rows = self.db.execute("SELECT seed, metric FROM runs WHERE pipeline=? AND variant='clean' AND error IS NULL",
                               (pipeline,))
        return {seed: float(m) for seed, m in rows if isinstance(m, (int, float)) and math.isfinite(m)}

    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def runs(self) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM runs ORDER BY pipeline, variant, seed", self.db)
        for col in ("metric", "reported_metric", "seconds"):  # NaN is stored as NULL: back to NaN
            df[col] = pd.to_numeric(df[col]).astype(float)
        df["probes"] = df["probes"].map(json.loads)
        df["warnings"] = df["warnings"].map(json.loads)
        df["curves"] = df["curves"].map(lambda c: json.loads(c) if c else {})
        return df

    def verdicts(self) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM verdicts ORDER BY pipeline, variant, seed, detector", self.db)
        df["score"] = pd.to_numeric(df["score"]).astype(float)  # NaN is stored as NULL: back to NaN
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
        if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in UNWRITABLE_CODES:  # the disk, not the file
            raise
        return str(exc)
    return None if result == "ok" else result


def _columns(db: sqlite3.Connection, table: str) -> tuple:
    quoted = table.replace('"', '""')
    return tuple(row[1] for row in db.execute(f'PRAGMA table_info("{quoted}")'))


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring ``db`` to :data:`SCHEMA_VERSION` in place, or refuse it."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    schema = 1 if version in (0, 1) else version
    if schema not in TABLES:
        which = "a newer recipebench" if version > SCHEMA_VERSION else "an unknown program"
        raise StoreVersionError(
            f"{path} has results schema version {version}, written by {which}; this recipebench reads versions "
            f"up to {SCHEMA_VERSION}: use the recipebench that wrote it or another --out directory")
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
              if not name.startswith("sqlite_")}
    expected = TABLES[schema]
    wrong = sorted(t for t in tables if _columns(db, t) != expected.get(t))
    if wrong:
        raise StoreVersionError(
            f"{path} is not a recipebench results database (unexpected table{'s' * (len(wrong) > 1)}: "
            f"{', '.join(wrong)}); choose another --out directory")
    if schema == SCHEMA_VERSION and tables >= set(expected):
        return
    # one explicit transaction (sqlite3 runs DDL outside implicit ones): the database is
    # either migrated whole or left as it was
    db.execute("BEGIN IMMEDIATE")
    try:
        if schema == 1 and "runs" in tables:
            db.execute("ALTER TABLE runs ADD COLUMN reported_metric REAL")
        for statement in filter(str.strip, SCHEMA.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.rollback()
        raise
    db.commit()
