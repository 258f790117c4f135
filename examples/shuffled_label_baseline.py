"""Tutorial detector: the shuffled-label baseline ("dumb baselines", recipe §2).

Train a fresh model for 60 steps on the pipeline's exact batches with the labels
permuted within each batch (with labels that carry no information a model only learns
the prior, within a few dozen steps). The recorded run's final training loss must be
clearly lower; when it is not, the model cannot use the input-label relation (e.g.
inputs mixed across the batch). Clean runs end at 0.01-0.5 of the shuffled-label
loss, so the flag is a ratio > 0.8.

    recipebench eval-detector examples/shuffled_label_baseline.py:ShuffledLabelBaseline --seeds 4

(4 seeds is the fewest at which a detector can be marked caught: 3/3 against 0/3 clean
gives one-sided Fisher p = 0.05, not below 0.05.)
"""
import numpy as np
import torch

from recipebench.detectors.base import Detector


class ShuffledLabelBaseline(Detector):
    name = "shuffled_label_baseline"
    description = "training on real labels beats training on labels shuffled within each batch"
    recipe_step = "input-independent baseline"
    stage, kind, cost = "baselines", "active", 3
    example_bug = "view_instead_of_permute"
    MAX_RATIO, STEPS = 0.8, 60

    def check(self, s):
        gen = torch.Generator().manual_seed(s.seed)
        shuffled = ((x, y[torch.randperm(len(y), generator=gen)]) for x, y in s.batches())
        fake = float(np.mean(s.train(s.fresh_model(), self.STEPS, shuffled)[-20:]))
        real = float(np.mean(s.trace.loss[-20:]))
        ratio = real / fake
        return self.decide(ratio > self.MAX_RATIO, ratio, steps=self.STEPS,
                           real_final_loss=real, shuffled_label_final_loss=fake)
