"""--executor ray gives the same cells as the local executor for the same seeds."""
import pytest

from tests.test_cli import SMALL, run_cli

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'recipebench[ray]'); CI installs it")


def test_ray_matches_local(tmp_path):
    code, _, err = run_cli("run", *SMALL, "--out", str(tmp_path / "local"), "--cache-dir", str(tmp_path / "c1"))
    assert code == 0, err
    code, _, err = run_cli("run", *SMALL, "--executor", "ray", "--out", str(tmp_path / "ray"),
                           "--cache-dir", str(tmp_path / "c2"))
    assert code == 0, err
    assert (tmp_path / "ray" / "cells.csv").read_bytes() == (tmp_path / "local" / "cells.csv").read_bytes()
