"""The hf_trainer_accum and distillation pipelines do what their docstrings say."""
import torch

from recipebench.harness.pipeline import get_pipeline
from recipebench.harness.trace import prepare, steps_per_epoch
from tests.conftest import subject


def test_hf_trainer_schedule_counts_optimizer_steps():
    """72 batches per epoch, 18 optimizer steps each: the LambdaLR warms up from 0 over
    10% of the 72 update steps and ends near 0 (it was sized in optimizer steps)."""
    p = get_pipeline("hf_trainer_accum")
    assert steps_per_epoch(p, prepare(p)) == 72 and p.steps == 4 * 72
    t = subject("hf_trainer_accum").trace
    assert len(t.lr) == 72 and t.lr[0] == 0.0 and max(t.lr) == p.lr and t.lr[-1] < 0.02 * p.lr
    assert t.step_calls[:2] == [3, 7]


def test_hf_trainer_batches_are_dicts_padded_to_their_longest():
    s = subject("hf_trainer_accum")
    x, y = next(s.batches())
    assert set(x) == {"input_ids", "attention_mask"} and y.shape == (8,)
    assert bool((x["attention_mask"].sum(1) == x["attention_mask"].shape[1]).any())  # no all-padding column


def test_teacher_training_leaves_the_random_state_alone():
    from recipebench.harness.pipelines import distillation as d

    d.trained_teacher.cache_clear()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    teacher = d.trained_teacher()
    assert torch.equal(torch.rand(3), expected)
    assert not teacher.training and not any(q.requires_grad for q in teacher.parameters())
