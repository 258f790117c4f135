"""The tutorials in docs/ run their examples/ code here, through both plugin routes
(a file path and an installed distribution's entry points), so the docs cannot rot."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
BUG = f"{ROOT}/examples/zero_grad_before_step.py:ZeroGradBeforeStep"
DETECTOR = f"{ROOT}/examples/shuffled_label_baseline.py:ShuffledLabelBaseline"


def test_tutorial_bug_with_check_bug(tmp_path):
    code, out, err = run_cli("check-bug", BUG, "--pipelines", "digits", "--seeds", "3", "--workers", "2", "--quiet",
                             "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"))
    assert code == 0, err
    assert "silent: yes (3 runs" in out
    impact = next(line for line in out.splitlines() if line.startswith("digits") and "final_metric" in line)
    assert impact.rstrip().endswith("harmful")
    row = next(line for line in out.splitlines() if " gradient_flow " in line)
    assert "3/3" in row and "0/3" in row


def test_tutorial_detector_with_eval_detector(tmp_path):
    code, out, err = run_cli("eval-detector", DETECTOR, "--bugs", "view_instead_of_permute", "--seeds", "3",
                             "--pipelines", "digits,sequence,charlm", "--holdout", "--quiet",
                             "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"))
    assert code == 0, err
    assert "recall: 0/1" in out  # 3/3 vs 0/3 has p = 0.05: not significant with 3 seeds
    assert "shuffled_label_baseline *" in out and "leave-one-pipeline-out" in out
    alone = out.split("shuffled_label_baseline alone:")[1].splitlines()[1].strip()  # the single-run view
    assert alone.startswith("calibration: false alarm 0/9 ") and "recipe suite with it:" in out
    from recipebench.harness.store import Store

    v = Store(tmp_path / "o" / "results.sqlite").verdicts()
    mine = v[v.detector == "shuffled_label_baseline"]
    assert set(mine[mine.variant == "view_instead_of_permute"].outcome) == {"flagged"}
    assert set(mine.pipeline) == {"digits", "sequence", "charlm"}  # calibration pipelines only
    assert set(mine[mine.variant == "clean"].outcome) == {"passed"}


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """A throw-away distribution declaring the tutorial entries as entry points,
    installed with pip into a target directory."""
    src = tmp_path_factory.mktemp("dist")
    (src / "tutorial_plugins.py").write_text(
        (ROOT / "examples/zero_grad_before_step.py").read_text() + "\n"
        + (ROOT / "examples/shuffled_label_baseline.py").read_text())
    (src / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "recipebench-tutorial-plugins"
        version = "0.1"
        [tool.setuptools]
        py-modules = ["tutorial_plugins"]
        [project.entry-points."recipebench.bugs"]
        zero_grad_before_step = "tutorial_plugins:ZeroGradBeforeStep"
        [project.entry-points."recipebench.detectors"]
        shuffled_label_baseline = "tutorial_plugins:ShuffledLabelBaseline"
    """))
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True)
    return target


def _cli(target, *args):
    env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "recipebench", *args], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_entry_points_register_plugins(installed_plugin):
    bugs = _cli(installed_plugin, "list", "bugs", "--format", "csv")
    detectors = _cli(installed_plugin, "list", "detectors", "--format", "csv")
    assert "zero_grad_before_step" in bugs.stdout and "shuffled_label_baseline" in detectors.stdout


def test_entry_point_plugins_run_in_the_matrix(installed_plugin, tmp_path):
    r = _cli(installed_plugin, "run", "--pipelines", "digits", "--bugs", "zero_grad_before_step",
             "--detectors", "shuffled_label_baseline,gradient_flow", "--seeds", "2", "--quiet",
             "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    cells = (tmp_path / "o" / "cells.csv").read_text()
    assert "digits,calibration,zero_grad_before_step,gradient_flow,2,2," in cells


def test_third_party_pipeline_from_a_file(tmp_path):
    """A pipeline in the user's own file gets every applicable bug and detector."""
    (tmp_path / "my_pipeline.py").write_text(textwrap.dedent('''
        from recipebench.harness.pipeline import Pipeline
        from recipebench.harness.pipelines.common import SmallCNN, digits

        def small_digits():
            return Pipeline(name="small_digits", description="digits, fewer steps", n_classes=10,
                            build_model=lambda p: SmallCNN(10), load_data=digits, steps=60,
                            capabilities=frozenset({"classification", "normalization"}))
    '''))
    code, out, err = run_cli("run", "--pipelines", f"{tmp_path}/my_pipeline.py:small_digits",
                             "--bugs", "wrong_normalization_mean,view_instead_of_permute",
                             "--detectors", "input_stats,batch_dependency", "--seeds", "2", "--quiet",
                             "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"))
    assert code == 0, err
    import csv

    rows = {(r["pipeline"], r["bug"], r["detector"]): r for r in csv.DictReader((tmp_path / "o" / "cells.csv").open())}
    cell = rows[("small_digits", "wrong_normalization_mean", "input_stats")]
    assert (cell["detections"], cell["seeds"], cell["clean_detections"]) == ("2", "2", "0")
    assert not any(bug == "view_instead_of_permute" for _, bug, _ in rows)  # needs a sequence model


def test_the_readme_wrapped_script_trains_and_takes_the_scheduler_bugs():
    """examples/wine_script.py (the README's worked example): loaded by path, trained
    with its real OneCycleLR, and a scheduler bug applies to it by its capabilities."""
    from recipebench.bugs.base import make_variant
    from recipebench.harness.pipeline import PIPELINES
    from recipebench.harness.trace import record

    factory = PIPELINES.load_path(f"{ROOT}/examples/wine_script.py:wine_mlp")
    clean = record(factory(), 0)
    buggy = record(make_variant(factory(), "warmup_stepped_per_epoch"), 0, clean=factory())
    assert clean.error is None and clean.metric > 0.9
    # stepped once an epoch (3 batches) the 300-step cycle is a third done when training ends
    assert clean.lr[-1] < 1e-6 and buggy.lr[-1] > 1e-3
