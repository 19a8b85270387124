"""Class-balanced resampling (the SRAT paper's future-work baseline; Estabrooks et al., 2004): each epoch draws
``n`` examples with replacement, every class equally likely, and trains with plain cross-entropy."""

from dataclasses import dataclass

from methods.base import Method
from methods.registry import register


@register("resample")
@dataclass(frozen=True)
class Resample(Method):
    """Class-balanced resampling (Estabrooks et al., 2004): n draws per epoch with replacement, each class
    equally likely, plain cross-entropy."""

    description = "class-balanced resampling (with replacement), cross-entropy"
    card = {"paper": "Estabrooks et al., A Multiple Resampling Method for Learning from Imbalanced Data Sets",
            "venue": "Computational Intelligence", "year": 2004, "repository": None}
    sampler = "class-balanced"
