"""Walks every registered bug and detector (cosmic-ray style): a new entry is tested
the moment it is registered."""
import warnings

import pytest

from recipebench.bugs.base import BUGS, make_variant, parse_variant, symptom_higher_is_worse
from recipebench.detectors.base import DETECTORS, Outcome, Verdict
from recipebench.harness.pipeline import PIPELINES, get_pipeline
from recipebench.harness.probes import PROBES
from recipebench.harness.runner import check_one
from recipebench.harness.subject import Subject
from recipebench.harness.trace import batches, monitored_values, prepare, steps_per_epoch, train
from tests.conftest import clean_reference, subject

BUG_PIPELINES = [(b, p) for b, cls in BUGS.items() for p in PIPELINES.names() if cls().applies_to(get_pipeline(p))]


def test_every_bug_applies_somewhere():
    """Every catalog bug (plugins registered by other tests are not the catalog)."""
    covered = {b for b, _ in BUG_PIPELINES}
    catalog = {n for n, c in BUGS.items() if c.__module__.startswith("recipebench.bugs.")}
    assert catalog and catalog <= covered


@pytest.mark.parametrize("bug,pipeline", BUG_PIPELINES)
def test_bug_is_silent(bug, pipeline):
    """No exception, no warning, training runs: a few steps at every severity."""
    for severity in BUGS.get(bug).severities:
        p = make_variant(get_pipeline(pipeline), f"{bug}@{severity}")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            prep = prepare(p)
            model = p.build_model(p)
            losses = train(p, model, batches(p, prep, 0), 5, steps_per_epoch(p, prep),
                           monitored=monitored_values(p, model, prep))
        assert len(losses) == 5


def _symptom_pairs() -> list[tuple[str, str]]:
    """Each bug on its first applicable calibration pipeline and its first applicable
    test pipeline (sorted names): every bug is silent everywhere (above), and shows its
    symptom on one pipeline of each side; the full matrix measures the rest."""
    pairs = []
    for b in (n for n, c in BUGS.items() if not c.control):
        for side in ("calibration", "test"):
            p = next((p for bb, p in BUG_PIPELINES if bb == b and get_pipeline(p).partition == side), None)
            if p is not None:
                pairs.append((b, p))
    return pairs


# A bug whose symptom probe does not yet show it (strict: fails once it does).
NO_SYMPTOM_YET = {("tbptt_hidden_reset_every_batch", "lstm_lm"): "final test loss 2.465 vs 2.457 clean at 200 "
                  "steps: the 8-step windows carry little the model uses yet; needs a context-length probe"}


# Pairs whose clean symptom is a coin flip per seed, compared as means over seeds 0-2.
# lstm_lm at SGD lr 20 lowers its LR only when an early epoch's validation loss happens
# to rise (seeds 0, 2, 3, 4 in a fresh process and in the runner). In some suite runs
# (CI, and here beside another pytest process) seed 0 took another trajectory; the same
# test files rerun did not reproduce it: the first chaotic steps amplify a last-bit
# difference whose source is not pinned down yet.
SYMPTOM_SEEDS = {("plateau_fed_train_loss", "lstm_lm"): (0, 1, 2)}


@pytest.mark.parametrize("bug,pipeline", [
    pytest.param(b, p, marks=pytest.mark.xfail(strict=True, reason=NO_SYMPTOM_YET[(b, p)]))
    if (b, p) in NO_SYMPTOM_YET else (b, p) for b, p in _symptom_pairs()])
def test_bug_shows_its_symptom(bug, pipeline):
    """The bug's symptom probe is worse than on the clean pipeline (same seed; mean
    over seeds for SYMPTOM_SEEDS) by more than 10% of the larger of the two values."""
    probe, seeds = PROBES[BUGS.get(bug).symptom], SYMPTOM_SEEDS.get((bug, pipeline), (0,))
    clean = sum(probe.fn(subject(pipeline, "clean", s)) for s in seeds) / len(seeds)
    buggy = sum(probe.fn(subject(pipeline, bug, s)) for s in seeds) / len(seeds)
    assert all(subject(pipeline, bug, s).trace.silent for s in seeds)
    worse_by = (buggy - clean) if symptom_higher_is_worse(BUGS.get(bug)) else (clean - buggy)
    assert worse_by > 0.1 * max(abs(clean), abs(buggy), 1e-3), f"{probe.name}: clean {clean:.4g}, {bug} {buggy:.4g}"


# Detectors are tested for passing clean runs on the calibration pipelines, where their
# thresholds were set. Test pipelines are held out: their clean false-positive rate is a
# measurement in the report (cells.csv, split "test"), not a test to make pass.
CALIBRATION = [p for p in PIPELINES.names() if get_pipeline(p).partition == "calibration"]


def _example_pipeline(det_cls):
    if det_cls.example_pipeline:
        return det_cls.example_pipeline
    bug = parse_variant(det_cls.example_bug)[0]
    for p in CALIBRATION:
        pipe = get_pipeline(p)
        if BUGS.get(bug)().applies_to(pipe) and det_cls().applies_to(pipe.capabilities):
            return p
    pytest.fail(f"no pipeline offers both {det_cls.name} and its example bug {det_cls.example_bug}")


def _check(det_cls, pipeline, variant):
    """The detector's cell as the runner computes it: never an error or a timeout on
    the zoo (a model or batch it cannot read is ``not_applicable``)."""
    ref = clean_reference(pipeline) if det_cls.needs_reference else ()
    s = subject(pipeline, variant, 0, ref)
    verdict = check_one(det_cls.name, s, s.pipeline, s.trace, timeout=900)
    assert isinstance(verdict, Verdict)
    assert verdict.outcome not in (Outcome.ERROR, Outcome.TIMEOUT), verdict.evidence
    return verdict


# What a clean run or a negative control may get: a pass, advice, or not_applicable
# (a detector may find only at run time that it cannot judge a run, e.g. epoch_order
# on one batch per epoch). A detector's example-bug test still requires a flag.
NOT_A_DETECTION = (Outcome.PASSED, Outcome.ADVICE, Outcome.NOT_APPLICABLE)


UNSEEDABLE = {"reproducibility"}  # its example bug would make the matrix irreproducible: tests/test_detectors.py


RECIPE_DETECTORS = [n for n, c in DETECTORS.items() if not c.peer]  # peers: tests/test_peers.py


@pytest.mark.parametrize("name", [n for n in RECIPE_DETECTORS if n not in UNSEEDABLE])
def test_detector_catches_its_example_bug(name):
    cls = DETECTORS.get(name)
    assert cls.example_bug, f"{name} declares no example bug"
    verdict = _check(cls, _example_pipeline(cls), cls.example_bug)
    assert verdict.outcome is Outcome.FLAGGED, verdict.evidence


# Known false positives on clean calibration pipelines at seed 0 (none since the rules were
# re-derived under the suite budget on 2026-12-03). Strict: the test fails once one is fixed.
KNOWN_FALSE_POSITIVES: dict = {}


@pytest.mark.parametrize("name,pipeline", [
    pytest.param(d, p, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FALSE_POSITIVES[(d, p)]))
    if (d, p) in KNOWN_FALSE_POSITIVES else (d, p)
    for d, c in DETECTORS.items() for p in CALIBRATION if not c.peer and c().applies_to(get_pipeline(p).capabilities)])
def test_detector_passes_clean_calibration_pipeline(name, pipeline):
    verdict = _check(DETECTORS.get(name), pipeline, "clean")
    assert verdict.outcome in NOT_A_DETECTION, verdict.evidence


# Held-out pipelines and negative controls at seed 0. What fires here is a measurement
# (reports/full: splits "test" and "control"), never a reason to move a threshold; the
# false positives measured are listed (strict: the test fails once one stops firing).
TEST_SIDE = [p for p in PIPELINES.names() if get_pipeline(p).partition == "test"]
KNOWN_HELD_OUT_FALSE_POSITIVES = {
    ("zero_input_baseline", "sine_lstm"): "LBFGS at lr 0.8 (time_sequence_prediction) ends above the zero-input "
                                          "loss on seeds 0-1 (0.51 vs 0.44): the run extracts nothing there",
    ("lr_schedule", "embedding_bag_text"): "the torchtext tutorial's StepLR(gamma 0.1) stepped whenever validation "
                                           "accuracy drops: seed 0 below 1% of its LR by step 104 of 140, first "
                                           "drop at step 65 while the loss still fell 9.4% (the tutorial's rule)",
}
CONTROL_PIPELINE = "digits"  # every negative control applies to it


@pytest.mark.parametrize("name,pipeline", [
    pytest.param(d, p, marks=pytest.mark.xfail(strict=True, reason=KNOWN_HELD_OUT_FALSE_POSITIVES[(d, p)]))
    if (d, p) in KNOWN_HELD_OUT_FALSE_POSITIVES else (d, p)
    for d, c in DETECTORS.items() for p in TEST_SIDE
    if c.in_default_run and not c.peer and not c.needs_reference and c().applies_to(get_pipeline(p).capabilities)])
def test_detector_passes_clean_test_pipeline(name, pipeline):
    """The default detectors. metric_drop (needs_reference) is left out: four more clean
    traces per held-out pipeline; its band is a 99% prediction interval of the clean
    seeds by construction."""
    verdict = _check(DETECTORS.get(name), pipeline, "clean")
    assert verdict.outcome in NOT_A_DETECTION, verdict.evidence


@pytest.mark.parametrize("name,pipeline,control", [
    (d, CONTROL_PIPELINE, b) for d, c in DETECTORS.items() for b, bc in BUGS.items()
    if bc.control and c.in_default_run and not c.peer and c().applies_to(get_pipeline(CONTROL_PIPELINE).capabilities)
    and bc().applies_to(get_pipeline(CONTROL_PIPELINE))])
def test_detector_passes_negative_control(name, pipeline, control):
    verdict = _check(DETECTORS.get(name), pipeline, control)
    assert verdict.outcome in NOT_A_DETECTION, verdict.evidence


def test_every_negative_control_applies_to_the_control_pipeline():
    controls = [b for b, c in BUGS.items() if c.control and c.__module__.startswith("recipebench.bugs.")]
    assert controls and all(BUGS.get(b)().applies_to(get_pipeline(CONTROL_PIPELINE)) for b in controls)


def test_detectors_are_not_told_the_bug():
    """A subject exposes the same metadata for a clean and a mutated pipeline."""
    clean, buggy = subject("sequence"), subject("sequence", "view_instead_of_permute")
    for attr in ("capabilities", "n_classes", "steps_per_epoch"):
        assert getattr(clean, attr) == getattr(buggy, attr)
    assert clean.pipeline.name == buggy.pipeline.name
    assert not any("bug" in k for k in vars(Subject(buggy.pipeline, 0)))
