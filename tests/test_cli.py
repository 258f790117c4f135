"""The command line end to end on a small matrix: outputs, caching, determinism,
resume, clear errors for unknown names."""
import csv
import io
import json
import sqlite3
from contextlib import redirect_stderr, redirect_stdout

import pytest

from recipebench.harness.cli import main

SMALL = ["--pipelines", "sequence", "--bugs", "view_instead_of_permute",
         "--detectors", "batch_dependency,metric_drop,gradient_flow,grad_loss_consistency", "--seeds", "3", "--workers", "1", "--quiet"]


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    code, out, err = run_cli("run", *SMALL, "--out", str(root / "out"), "--cache-dir", str(root / "cache"))
    assert code == 0, err
    return root


def test_run_writes_reports(small_run):
    out = small_run / "out"
    for name in ("cells.csv", "impact.csv", "matrix.md", "detectors.csv", "results.sqlite"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert {"pipeline", "bug", "detector", "seeds", "detections", "rate", "clean_rate", "p_value", "caught"} <= set(rows[0])
    cell = next(r for r in rows if r["bug"] == "view_instead_of_permute" and r["detector"] == "batch_dependency")
    assert cell["detections"] == "3" and cell["seeds"] == "3" and cell["clean_rate"] == "0"
    impact = list(csv.DictReader((out / "impact.csv").open()))
    assert impact[0]["verdict"] == "harmful"
    md = (out / "matrix.md").read_text()
    assert "## sequence" in md and "3/3" in md and "git_revision" in md


def test_rerun_is_served_from_the_database(small_run):
    out = small_run / "out"
    before = sqlite3.connect(out / "results.sqlite").execute("SELECT count(*), sum(seconds) FROM verdicts").fetchone()
    first = (out / "cells.csv").read_bytes()
    code, _, err = run_cli("run", *SMALL, "--out", str(out), "--cache-dir", str(small_run / "cache"))
    assert code == 0, err
    after = sqlite3.connect(out / "results.sqlite").execute("SELECT count(*), sum(seconds) FROM verdicts").fetchone()
    assert after == before  # no verdict recomputed (same rows, same recorded timings)
    assert (out / "cells.csv").read_bytes() == first


def test_same_seed_same_matrix(small_run, tmp_path):
    code, _, err = run_cli("run", *SMALL, "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    assert (tmp_path / "b" / "cells.csv").read_bytes() == (small_run / "out" / "cells.csv").read_bytes()


def test_resume_reuses_the_recorded_config(small_run):
    out = small_run / "out"
    code, _, err = run_cli("run", "--resume", "--out", str(out), "--cache-dir", str(small_run / "cache"), "--quiet")
    assert code == 0, err
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert {r["detector"] for r in rows} == {"batch_dependency", "metric_drop", "gradient_flow", "grad_loss_consistency"}


def test_resume_without_a_previous_run(tmp_path):
    code, _, err = run_cli("run", "--resume", "--out", str(tmp_path))
    assert code == 2 and "earlier run" in err


@pytest.mark.parametrize("flag,bad,suggestion", [("--bugs", "view_instead_of_permut", "view_instead_of_permute"),
                                                 ("--detectors", "batch_dependence", "batch_dependency"),
                                                 ("--pipelines", "digit", "digits")])
def test_unknown_name_is_one_clear_error(flag, bad, suggestion, tmp_path):
    code, out, err = run_cli("run", flag, bad, "--out", str(tmp_path))
    assert code == 2
    assert "unknown" in err and f"Did you mean '{suggestion}'" in err and "Traceback" not in err


def test_unknown_severity(tmp_path):
    code, _, err = run_cli("run", "--bugs", "wrong_normalization_mean@huge", "--out", str(tmp_path))
    assert code == 2 and "no severity 'huge'" in err and "mid" in err


@pytest.mark.parametrize("what", ["bugs", "detectors", "pipelines"])
def test_list_csv_and_json(what):
    code, out, _ = run_cli("list", what, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and rows and "name" in rows[0]
    code, out, _ = run_cli("list", what, "--format", "json")
    assert {r["name"] for r in json.loads(out)} == {r["name"] for r in rows}
    if what == "bugs":
        assert all(r["source"] and r["recipe_step"] and r["family"] for r in rows)
        assert {r["split"] for r in rows} == {"calibration", "test"}


@pytest.mark.parametrize("what", ["bugs", "detectors", "pipelines"])
def test_list_table_fits_100_columns(what):
    code, out, _ = run_cli("list", what)
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 100
    assert len(out.splitlines()) > 10  # every entry is listed


def test_report_reads_the_database_without_training(small_run, tmp_path):
    (small_run / "out" / "matrix.md").unlink()
    code, out, err = run_cli("report", "--out", str(small_run / "out"))
    assert code == 0, err
    assert (small_run / "out" / "matrix.md").exists()
    code, _, err = run_cli("report", "--out", str(tmp_path))
    assert code == 2 and "no results database" in err


def test_new_output_dir_reuses_cached_results(small_run, tmp_path):
    """Every run and verdict (two detectors share a module) comes back from the cache."""
    from recipebench.harness.store import Store

    code, _, err = run_cli("run", *SMALL, "--out", str(tmp_path / "again"), "--cache-dir", str(small_run / "cache"))
    assert code == 0, err
    cols = ["pipeline", "variant", "seed", "detector", "outcome", "score", "seconds"]
    first = Store(small_run / "out" / "results.sqlite").verdicts()[cols]
    again = Store(tmp_path / "again" / "results.sqlite").verdicts()[cols]
    assert len(again) == len(first) and again.equals(first)


def test_html_report_has_every_cell(small_run):
    """matrix.html parses as HTML and links every cell of cells.csv to its evidence."""
    from html.parser import HTMLParser

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.hrefs, self.ids, self.images, self.stack = set(), set(), 0, []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.hrefs.add(a.get("href", "")[1:]) if tag == "a" else None
            self.ids.add(a["id"]) if "id" in a else None
            self.images += tag == "img" and a.get("src", "").startswith("data:image/png;base64,")
            if tag not in ("meta", "img", "br"):
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
            self.stack.pop()

    page = Collect()
    page.feed((small_run / "out" / "matrix.html").read_text())
    assert page.stack == [] and page.images >= 1
    for r in csv.DictReader((small_run / "out" / "cells.csv").open()):
        anchor = f"{r['pipeline']}-{r['bug']}-{r['detector']}".replace("@", "_")
        assert anchor in page.hrefs and anchor in page.ids, anchor
