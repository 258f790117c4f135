"""GAN bugs: the adversarial step trains the wrong thing (recipe §2 "use backprop to
chart dependencies"). A GAN pipeline's ``train_step`` takes the keyword switches
``detach_generator_loss`` and ``swap_labels`` (see ``harness/pipelines/dcgan.py``'s
``gan_step``); a bug turns one on with ``functools.partial``."""
import functools

from recipebench.bugs.base import Bug, register_bug


@register_bug
class GeneratorLossThroughDetach(Bug):
    """The generator's loss is computed on ``D(fake.detach())``, the tensor the
    discriminator's step needs: no gradient reaches G, which never leaves its init.
    The discriminator still trains, so both losses look alive."""

    name = "generator_loss_through_detach"
    description = "G's loss computed on D(fake.detach()): the generator never receives a gradient"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://github.com/nikhilsinghmus/image2reverb/issues/37 (fake_spec.detach() in the generator step; "
              "the maintainer confirms the bug); https://github.com/wangle53/CSA-CDGAN/issues/5")
    family = "loss"
    requires = frozenset({"gan"})
    symptom = "frozen_param_fraction"
    expected_symptom = "every generator parameter has zero gradient and never changes; samples stay at init"

    def apply(self, p):
        return p.replace(train_step=functools.partial(p.train_step, detach_generator_loss=True))


@register_bug
class DiscriminatorLabelsSwapped(Bug):
    """Real images labelled 0 and fakes 1 in the discriminator's step, while the
    generator's loss still targets 1 ("real"): G is rewarded for what D calls fake,
    so the two nets cooperate instead of competing and G never learns the data."""

    name = "discriminator_labels_swapped"
    description = "real/fake labels swapped in D's step only (G still targets the real label)"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://github.com/https-deeplearning-ai/GANs-Public/issues/1 (SRGAN: discriminator loss with zeros "
              "for real and ones for fake while the generator's target stayed ones)")
    family = "loss"
    requires = frozenset({"gan"})
    symptom = "final_metric"
    expected_symptom = "losses stay small and stable, samples never approach the data; sample quality collapses"

    def apply(self, p):
        return p.replace(train_step=functools.partial(p.train_step, swap_labels=True))
