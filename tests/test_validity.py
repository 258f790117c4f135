"""The headline numbers (harness/validity.py) on small hand-made verdict tables: which
runs are legitimate, which side they count on, and what one run of the whole suite
shows a user."""
import math

import pandas as pd

from recipebench.harness import validity

CALIB, TEST = "digits", "d2l_lenet"  # one calibration and one held-out pipeline of the zoo
CONTROL = "control_lr_x3"


def verdicts(rows):
    """rows: (pipeline, variant, seed, detector, outcome)."""
    return pd.DataFrame(rows, columns=["pipeline", "variant", "seed", "detector", "outcome"])


def impact(rows):
    """rows: (pipeline, bug, verdict)."""
    return pd.DataFrame(rows, columns=["pipeline", "bug", "verdict"])


def test_a_control_of_a_calibration_pipeline_counts_on_the_calibration_side():
    v = verdicts([(CALIB, CONTROL, 0, "a", "flagged"), (TEST, CONTROL, 0, "a", "passed"),
                  (TEST, "clean", 0, "a", "passed")])
    alarms = validity.false_alarms(v).set_index(["detector", "side"])
    assert alarms.loc[("a", "calibration")].tolist() == [1, 1]  # runs, flagged
    assert alarms.loc[("a", "test")].tolist() == [2, 0]


def test_single_run_view_counts_a_run_once_whatever_number_of_detectors_flag_it():
    v = verdicts([
        (TEST, "clean", 0, "a", "flagged"), (TEST, "clean", 0, "b", "flagged"),  # one alarmed run, two flags
        (TEST, "clean", 1, "a", "passed"), (TEST, "clean", 1, "b", "advice"),
        (TEST, CONTROL, 0, "a", "passed"), (TEST, CONTROL, 0, "b", "not_applicable"),
        (TEST, "bugx", 0, "a", "flagged"), (TEST, "bugx", 1, "a", "passed"), (TEST, "bugx", 1, "b", "error"),
        (TEST, "bugy", 0, "a", "flagged"),  # no_effect: not counted as a bug run
        (TEST, CONTROL, 1, "metric_drop", "flagged"),  # not in the suite: no alarm
    ])
    imp = impact([(TEST, "bugx", "harmful"), (TEST, "bugy", "no_effect"), (TEST, CONTROL, "harmful")])
    suite = validity.single_run_suite(v, imp, {"a", "b"}).set_index("side")
    test = suite.loc["test"]
    assert (test.legit_runs, test.legit_alarmed) == (3, 1)  # clean 0, clean 1, control 0 (control 1: no suite verdict)
    assert (test.bug_runs, test.bug_alarmed) == (2, 1)  # a harmful control is never a bug
    assert math.isclose(test.false_alarm, 1 / 3) and test.false_alarm_hi > 1 / 3 and 0 < test.detection_lo < 0.5
    assert (test.worst_clean_rate, test.worst_clean_cell) == (0.5, f"{TEST}/a")
    assert suite.loc["calibration"].legit_runs == 0 and math.isnan(suite.loc["calibration"].false_alarm)


def test_the_headline_says_both_sides_with_their_bounds():
    v = verdicts([(CALIB, "clean", 0, "a", "passed"), (TEST, "clean", 0, "a", "flagged"),
                  (TEST, "bugx", 0, "a", "flagged")])
    lines = "\n".join(validity.suite_markdown(
        validity.single_run_suite(v, impact([(TEST, "bugx", "latent")]), {"a"}), "recipe detector"))
    assert "**calibration**: false alarm 0/1 = 0.0%" in lines
    assert "**test**: false alarm 1/1 = 100.0%" in lines and "detection 1/1 = 100.0%" in lines
