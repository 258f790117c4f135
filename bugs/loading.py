"""Loading bugs: the DataLoader, its sampler or a checkpoint silently deliver something
other than what the script meant (recipe §1 "become one with the data", §2
"visualize just before the net")."""
from torch.utils.data import DataLoader

from recipebench.bugs.base import Bug, register_bug

RECIPE = "https://karpathy.github.io/2019/04/25/recipe/"


def without_worker_init(loader: DataLoader) -> DataLoader:
    """The same DataLoader (dataset, sampling, workers, generator) built without ``worker_init_fn``."""
    common = dict(num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                  timeout=loader.timeout, generator=loader.generator, prefetch_factor=loader.prefetch_factor,
                  persistent_workers=loader.persistent_workers,
                  multiprocessing_context=loader.multiprocessing_context if loader.num_workers > 0 else None)
    if loader.batch_size is None:  # automatic batching off: the sampler yields whole batches
        return DataLoader(loader.dataset, batch_size=None, sampler=loader.sampler, **common)
    return DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, **common)


@register_bug
class WorkersShareNumpyRNG(Bug):
    """``worker_init_fn`` left out of a DataLoader whose Dataset augments with a NumPy
    random generator: every worker process starts from the same copy of its state, so
    the workers draw identical augmentation streams (batch k of worker 0 gets the same
    shifts and noise as batch k of worker 1). torch >= 1.9 reseeds the *global*
    ``np.random`` per worker (pytorch/pytorch#56488), not RNG objects the workers copy."""

    name = "workers_share_numpy_rng"
    description = "DataLoader workers without worker_init_fn: identical NumPy augmentation streams in every worker"
    recipe_step = "visualize just before the net"
    source = ("https://github.com/pytorch/pytorch/issues/5059 (np.random gives the same numbers in every worker); "
              "https://github.com/TorchDSP/torchsig/issues/343 (same random numbers in different workers, 2025)")
    family = "data"
    requires = frozenset({"dataloader_workers"})
    symptom = "worker_augmentation_repeats"
    expected_symptom = "augmented inputs repeat across workers: half the augmentation diversity"

    def apply(self, p):
        make = p.loader
        return p.replace(loader=lambda pipeline, x, y, gen: without_worker_init(make(pipeline, x, y, gen)))


@register_bug
class SamplerEpochNeverSet(Bug):
    """``sampler.set_epoch(epoch)`` never called: DistributedSampler seeds its shuffle
    with ``seed + epoch``, so every epoch visits the examples in the same order."""

    name = "sampler_epoch_never_set"
    description = "DistributedSampler.set_epoch not called before each epoch: the same order every epoch"
    recipe_step = "become one with the data"
    source = ("https://github.com/pytorch/pytorch/issues/31771 (DistributedSampler samples the same order every "
              "epoch); https://github.com/lucidrains/DALLE-pytorch/pull/230 (set_epoch added); "
              "https://pytorch.org/docs/stable/data.html#torch.utils.data.distributed.DistributedSampler")
    family = "data"
    requires = frozenset({"epoch_sampler"})
    symptom = "epoch_order_repeats"
    expected_symptom = "every epoch presents the batches in the same order"

    def apply(self, p):
        return p.replace(epoch_start=lambda loader, epoch: None)


@register_bug
class CheckpointPrefixStrictFalse(Bug):
    """A checkpoint saved from ``nn.DataParallel`` (keys "module.*") loaded with
    ``load_state_dict(strict=False)`` and the prefix not stripped: no key matches, so
    nothing loads and nothing complains; the backbone keeps its random init."""

    name = "checkpoint_prefix_strict_false"
    description = "DataParallel 'module.' keys loaded with strict=False: no pretrained weight is loaded, no error"
    recipe_step = "pretrain"
    source = ("https://github.com/pytorch/examples/issues/1029 (strict=False with prefixed keys silently loads a "
              "wrong model); https://github.com/pytorch/pytorch/issues/3805 ('module.' prefix of DataParallel)")
    family = "model"
    requires = frozenset({"checkpoint"})
    symptom = "final_metric"
    expected_symptom = "fine-tuning starts from random features; accuracy drops on the small target set"

    def apply(self, p):
        build = p.build_model  # the checkpoint capability's contract: build_model(p, strip_prefix=, strict=)
        return p.replace(build_model=lambda pipeline: build(pipeline, strip_prefix=False, strict=False))
