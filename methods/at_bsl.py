"""AT-BSL with its augmentations (Yue et al., "Revisiting Adversarial Training under Long-Tailed Distributions",
CVPR 2024; reference NISPLab/AT-BSL ``train_at_bsl_cifar10.py``): Balanced Softmax on the adversarial examples
(``balanced-softmax``) trained on RandAugment (``--aug ra``) or AutoAugment (``--aug aua``) images.

The reference's pipeline is ``v2.Compose([policy, RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor()])``,
so these methods declare ``default_augment = "randaugment+crop-flip"`` / ``"autoaugment+crop-flip"`` (``bench.augment``):
a cell gets it unless its suite names ``augment`` (then the suite's value wins; ``bench.suite``). The augmentation
is a cell key like any other, so ``augment = "randaugment+crop-flip"`` gives every method AT-BSL's augmentation.
"""

from dataclasses import dataclass

from methods.balanced_softmax import BalancedSoftmax
from methods.registry import register

_CARD = {"paper": "Yue et al., Revisiting Adversarial Training under Long-Tailed Distributions (AT-BSL)",
         "venue": "CVPR", "year": 2024, "repository": "https://github.com/NISPLab/AT-BSL",
         "file": "train_at_bsl_cifar10.py, at_bsl_loss.py",
         "hyperparameters": {},
         "notes": "loss CE(logits + log n_c) on PGD examples from x + 0.001*N(0, 1) (at_bsl_loss.pgd_loss); the "
                  "policy runs before crop and flip, as the reference's v2.Compose; torchvision's tensor kernels on "
                  "uint8 images in place of its PIL kernels (equal up to rounding in a few operations)."}


@register("at-bsl-ra")
@dataclass(frozen=True)
class ATBSLRandAugment(BalancedSoftmax):
    """AT-BSL-RA (Yue et al., CVPR 2024): Balanced Softmax on adversarial examples of RandAugment(2, 8) images,
    then random crop and flip. No hyperparameters of its own (the augmentation is the cell's ``augment``)."""

    description = "AT-BSL-RA: Balanced Softmax (CE(logits + log n_c)) with RandAugment(2, 8) + crop + flip"
    card = {**_CARD, "hyperparameters": {"augment": "randaugment+crop-flip: v2.RandAugment(num_ops=2, magnitude=8)"
                                                    ", then crop (padding 4) and flip"}}
    default_augment = "randaugment+crop-flip"


@register("at-bsl-aua")
@dataclass(frozen=True)
class ATBSLAutoAugment(BalancedSoftmax):
    """AT-BSL-AuA (Yue et al., CVPR 2024): Balanced Softmax on adversarial examples of AutoAugment (CIFAR-10
    policy) images, then random crop and flip. No hyperparameters of its own."""

    description = "AT-BSL-AuA: Balanced Softmax with AutoAugment (CIFAR-10 policy) + crop + flip"
    card = {**_CARD, "hyperparameters": {"augment": "autoaugment+crop-flip: v2.AutoAugment(AutoAugmentPolicy.CIFAR10)"
                                                    ", then crop (padding 4) and flip"}}
    default_augment = "autoaugment+crop-flip"
