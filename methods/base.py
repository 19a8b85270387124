"""The method contract: what every training method gives the runner.

A method is a small frozen dataclass of typed hyperparameters with hooks the runner calls:

* :meth:`Method.class_weights` — the class weights ``[C]`` for an epoch, given the training class counts
  (``None`` = uniform). A pure function of the epoch: schedules are never stateful.
* :meth:`Method.loss` — the training loss of a batch, from a :class:`LossInputs`.
* :meth:`Method.attack_loss` — the per-sample objective the training attack maximises (``None`` = cross-entropy),
  built from the clean logits when the objective needs them (TRADES' KL).
* :meth:`Method.inference_bias` — a ``[C]`` vector added to the trained model's logits for every prediction
  and every evaluation attack (post-hoc logit adjustment, RoBal's boundary adjustment); ``None`` = none.

and one hook that fills run-dependent defaults, :meth:`Method.for_run` (DRW starts at the run's first
learning-rate milestone unless set). Capability fields tell the runner what the model and the batch loop need:
``classifier`` (``linear`` or ``cosine``), :attr:`Method.uses_projection` (the SRAT projection head),
:attr:`Method.needs_clean_logits` (the loss also sees ``f(x)``), :attr:`Method.sampler` (how an epoch draws its
examples, ``methods.samplers``), :attr:`Method.attack_objective` and :attr:`Method.attack_start_std` (the
training attack); and what evaluation must watch for: :attr:`Method.scale_sensitive` (trains on logits ×
:attr:`Method.logit_scale`). The runner never looks at a method's name.

Writing a new method is one file: subclass :class:`Method` (or a loss family below), set the class variables,
add fields for new hyperparameters, and decorate it with ``@register("my-method")``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from methods.choices import CLASSIFIERS, NORMALIZATIONS

if TYPE_CHECKING:
    import torch

# torch (and so methods.losses / methods.weights) is imported where a loss or a weight is computed, not here:
# reading the registry (bench list, report, compare) then starts without torch's two-second import.


@dataclass(frozen=True)
class LossInputs:
    """Everything a loss may need for one batch.

    ``logits`` ``[N, C]`` of the inputs the model trains on (adversarial examples in adversarial training);
    ``targets`` ``[N]``; ``projection`` ``[N, D]`` L2-normalised projection of their features (``None`` when
    the method does not use it); ``weight`` ``[C]`` the epoch's class weights or ``None``; ``class_counts``
    ``[C]`` training counts; ``epoch`` 0-indexed; ``clean_logits`` ``[N, C]`` of the unperturbed inputs, in
    training mode and with gradients (only for methods with :attr:`Method.needs_clean_logits`).
    """

    logits: torch.Tensor
    targets: torch.Tensor
    class_counts: torch.Tensor
    epoch: int
    weight: torch.Tensor | None = None
    projection: torch.Tensor | None = None
    clean_logits: torch.Tensor | None = None

    def require_clean(self, method: str) -> torch.Tensor:
        """The clean logits, or a clear error naming the method that needed them."""
        if self.clean_logits is None:
            raise ValueError(f"method {method} needs the clean logits but got none")
        return self.clean_logits


@dataclass(frozen=True)
class Method:
    """Base of every method. Hyperparameters shared by the whole family of the paper:

    beta (float, 0.9999): β of the class-balanced effective number.
    normalize (str, "max"): class-balanced weight normalisation, ``max`` (most frequent class = 1, the SRAT
        reference) or ``sum`` (Σw = C, Cui et al. / LDAM-DRW).
    drw_epoch (int | None, None): first epoch of deferred re-weighting; ``None`` = the run's first
        learning-rate milestone (160 in the 200-epoch recipe, as the reference code).
    under_weight (float | None, None): a fixed weight for the under-represented half of the classes
        (well-represented 1) in place of class-balanced weights, for the paper's weight sweeps.
    lam (float, 0): λ, weight of the feature separation loss; > 0 switches the projection head on.
    temperature (float, 0.07): τ of the separation loss.
    classifier (str, "linear"): the model's classifier, ``linear`` or ``cosine`` (normalised, as the LDAM paper).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    prediction_loss: ClassVar[str] = "ce"
    weight_schedule: ClassVar[str] = "uniform"
    needs_clean_logits: ClassVar[bool] = False  # the loss also sees f(x) (TRADES, MART, RoBal)
    sampler: ClassVar[str] = "uniform"  # methods.samplers: how an epoch draws its training examples
    attack_objective: ClassVar[str] = "ce"  # methods.objectives: what the training attack maximises
    attack_start_std: ClassVar[float | None] = None  # Gaussian start x + σ·N(0,1) instead of uniform in the ball

    beta: float = 0.9999
    normalize: str = "max"
    drw_epoch: int | None = None
    under_weight: float | None = None
    lam: float = 0.0
    temperature: float = 0.07
    classifier: str = "linear"

    def __post_init__(self) -> None:
        self._check(0.0 <= self.beta < 1.0, "beta", "in [0, 1)")
        self._check(self.normalize in NORMALIZATIONS, "normalize", f"one of {', '.join(NORMALIZATIONS)}")
        self._check(self.drw_epoch is None or self.drw_epoch >= 0, "drw_epoch", ">= 0")
        self._check(self.under_weight is None or self.under_weight > 0, "under_weight", "> 0")
        self._check(self.lam >= 0, "lam", ">= 0")
        self._check(self.temperature > 0, "temperature", "> 0")
        self._check(self.classifier in CLASSIFIERS, "classifier", f"one of {', '.join(CLASSIFIERS)}")

    def _check(self, ok: bool, field: str, allowed: str) -> None:
        if not ok:
            raise ValueError(f"method {self.name}: {field} = {getattr(self, field)!r} is invalid; must be {allowed}")

    @property
    def uses_projection(self) -> bool:
        """Whether the loss needs the projection head's output (SRAT's separation term)."""
        return self.lam > 0

    @property
    def logit_scale(self) -> float:
        """The factor the training loss applies to the logits (1; LDAM's ``s``). Attacks see unscaled logits."""
        return 1.0

    @property
    def scale_sensitive(self) -> bool:
        """Whether the method trains on rescaled logits but is attacked on ``1×`` logits (methods.md §3): PGD's
        cross-entropy then sees another softmax temperature than training did, which can inflate robustness;
        ``bench.guards``' ``scaled-pgd`` guard re-attacks such runs at :attr:`logit_scale`."""
        return self.logit_scale != 1.0

    def for_run(self, *, epochs: int, milestones: tuple[int, ...] | list[int]) -> Method:
        """This method with the run-dependent defaults filled in (DRW starts at the first LR milestone)."""
        if self.drw_epoch is None:
            return dataclasses.replace(self, drw_epoch=int(milestones[0]) if milestones else int(epochs))
        return self

    def class_weights(self, epoch: int, class_counts) -> torch.Tensor | None:
        """The class weights ``[C]`` for ``epoch`` (``None`` = uniform), from the method's weight schedule."""
        if self.weight_schedule != "uniform" and self.drw_epoch is None:
            raise ValueError(f"method {self.name}: call for_run() before class_weights() to fix drw_epoch")
        from methods.weights import SCHEDULES

        return SCHEDULES.get(self.weight_schedule)(self, epoch, class_counts)

    def attack_loss(self, clean_logits: torch.Tensor | None):
        """The per-sample loss the training attack maximises (``None`` = cross-entropy), see ``methods.objectives``."""
        from methods.objectives import OBJECTIVES

        return OBJECTIVES.get(self.attack_objective).build(clean_logits)

    @property
    def attack_uses_clean(self) -> bool:
        """Whether the training attack's objective needs the clean logits (computed without gradients)."""
        from methods.objectives import OBJECTIVES

        return OBJECTIVES.get(self.attack_objective).needs_clean

    def inference_bias(self, class_counts) -> torch.Tensor | None:
        """A ``[C]`` bias the trained model adds to its logits at inference (``None`` = none)."""
        return None

    def needs(self) -> list[str]:
        """What the method asks of the runner beyond plain PGD training, in words (``bench list methods``)."""
        out = []
        if self.classifier != "linear":
            out.append(f"{self.classifier} classifier")
        if self.uses_projection:
            out.append("projection head")
        if self.needs_clean_logits:
            out.append("clean logits")
        if self.attack_objective != "ce":
            out.append(f"{self.attack_objective} attack")
        if self.attack_start_std is not None:
            out.append(f"gaussian start {self.attack_start_std:g}")
        if self.sampler != "uniform":
            out.append(f"{self.sampler} sampler")
        if type(self).inference_bias is not Method.inference_bias:
            out.append("inference bias")
        return out

    def prediction(self, inputs: LossInputs) -> torch.Tensor:
        """The prediction loss on the logits; loss families override this."""
        from methods import losses

        return losses.cross_entropy(inputs.logits, inputs.targets, weight=inputs.weight)

    def loss(self, inputs: LossInputs) -> torch.Tensor:
        """``L_pred + λ·L_sep`` (the separation term only when λ > 0)."""
        total = self.prediction(inputs)
        if self.uses_projection:
            if inputs.projection is None:
                raise ValueError(f"method {self.name} uses the separation loss but got no projection")
            from methods import losses

            total = total + self.lam * losses.separation_loss(inputs.projection, inputs.targets, self.temperature)
        return total

    @classmethod
    def hyperparameters(cls) -> dict[str, dataclasses.Field]:
        """The method's hyperparameters by name."""
        return {f.name: f for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class FocalFamily(Method):
    """Focal prediction loss. gamma (float, 1.0): γ of the softmax focal loss (reference default 1)."""

    prediction_loss: ClassVar[str] = "focal"
    gamma: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(self.gamma >= 0, "gamma", ">= 0")

    def prediction(self, inputs: LossInputs) -> torch.Tensor:
        from methods import losses

        return losses.focal_loss(inputs.logits, inputs.targets, weight=inputs.weight, gamma=self.gamma)


@dataclass(frozen=True)
class LDAMFamily(Method):
    """LDAM prediction loss. max_m (float, 0.5): largest margin; s (float, 30): logit scale in the loss."""

    prediction_loss: ClassVar[str] = "ldam"
    max_m: float = 0.5
    s: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(self.max_m >= 0, "max_m", ">= 0")
        self._check(self.s > 0, "s", "> 0")

    @property
    def logit_scale(self) -> float:
        return float(self.s)

    def prediction(self, inputs: LossInputs) -> torch.Tensor:
        from methods import losses

        return losses.ldam_loss(
            inputs.logits, inputs.targets, inputs.class_counts, weight=inputs.weight, max_m=self.max_m, s=self.s
        )


@dataclass(frozen=True)
class KLFamily(Method):
    """Methods with TRADES' robustness term ``KL(f(x) ‖ f(x′))`` between the clean and adversarial predictions.

    kl_weight (float, 6.0): its weight β (named so because ``beta`` is the class-balanced β).
    """

    needs_clean_logits: ClassVar[bool] = True
    kl_weight: float = 6.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(self.kl_weight >= 0, "kl_weight", ">= 0")
