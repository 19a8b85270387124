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
learning-rate milestone unless set). Four hooks shape the batch loop itself, each a no-op by default:

* :meth:`Method.attack_on` — the stage schedule: whether epoch ``e`` trains on adversarial examples (TAET's
  natural first stage returns ``False``; the runner then trains on the clean batch).
* :meth:`Method.attack_budget` — the training attack's ε and step α for a batch, scalars or per-sample ``[N]``
  tensors (class-wise budgets with an ε warm-up, RobustLT: fields ``cw_eps_alpha``, ``cw_eps_warmup``,
  ``cw_eps_start``, any method), and the radius of the random start.
* :meth:`Method.around_step` — a context manager the runner wraps around forward, backward and
  ``optimizer.step()``: adversarial weight perturbation (AWP: fields ``awp_gamma``, ``awp_warmup``,
  ``awp_proxy_lr``, any method) perturbs the weights on entry and removes the same perturbation on exit.
* :meth:`Method.init_state` / :meth:`Method.observe` / :meth:`Method.end_epoch` — run-level state a method
  carries across batches (a dict of tensors, saved in every checkpoint so a resumed run is exact; REAT counts the
  classes its adversarial examples are predicted as), passed to :meth:`Method.attack_loss`.

A method may also declare a default augmentation (:attr:`Method.default_augment`, AT-BSL's RandAugment): a cell
gets it unless a layer of the suite's precedence chain names ``augment`` (``bench.suite``). Likewise its training
attack's recipe (:attr:`Method.attack_recipe`): the batch-norm mode while crafting (``train``, ``eval`` = running
statistics used and kept, ``frozen`` = batch statistics used, running ones not updated) and the uniform start
(``symmetric`` in [−ε, ε], ``positive`` in [0, ε]) its reference code uses; a layer naming
``train_attack.bn_mode`` or ``train_attack.start`` wins. Capability fields tell the runner what the model and the batch loop need:
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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from methods.choices import CLASSIFIERS, NORMALIZATIONS

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

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
    training mode and with gradients (only for methods with :attr:`Method.needs_clean_logits`); ``features``
    ``[N, F]`` the penultimate features ``h`` of the inputs the model trains on (REAT's feature term).
    """

    logits: torch.Tensor
    targets: torch.Tensor
    class_counts: torch.Tensor
    epoch: int
    weight: torch.Tensor | None = None
    projection: torch.Tensor | None = None
    clean_logits: torch.Tensor | None = None
    features: torch.Tensor | None = None

    def require_clean(self, method: str) -> torch.Tensor:
        """The clean logits, or a clear error naming the method that needed them."""
        if self.clean_logits is None:
            raise ValueError(f"method {method} needs the clean logits but got none")
        return self.clean_logits


@dataclass(frozen=True)
class StepContext:
    """What :meth:`Method.around_step` sees of one optimisation step: the model, the 0-indexed epoch, and
    ``loss()``, which recomputes the method's training loss of the batch on the model's current weights (forward in
    training mode; batch-norm running statistics are updated by it, so a hook that only probes must restore them)."""

    model: torch.nn.Module
    epoch: int
    loss: Callable[[], torch.Tensor]


@dataclass(frozen=True)
class AttackBudget:
    """The training attack's budget for one batch: ``eps`` and ``alpha`` as floats or per-sample ``[N]`` tensors,
    and ``start_eps``, the radius of the uniform random start (``None`` = ``eps``)."""

    eps: float | torch.Tensor
    alpha: float | torch.Tensor
    start_eps: float | torch.Tensor | None = None


# Capability fields any method can switch on, added after the first release: a cell's stored hyperparameters
# (``method_params``) name them only when they differ from these defaults, so adding them changed no cell hash.
CAPABILITY_DEFAULTS = {"awp_gamma": 0.0, "awp_warmup": 0, "awp_proxy_lr": 0.01,
                       "cw_eps_alpha": 0.0, "cw_eps_warmup": 0.0, "cw_eps_start": "global"}
CW_EPS_STARTS = ("global", "class")


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

    Capabilities any method can switch on (off by default):

    awp_gamma (float, 0): γ of adversarial weight perturbation (Wu et al., NeurIPS 2020); > 0 switches AWP on.
        Each layer's weight moves by ``γ·‖w‖·d/‖d‖`` along the ascent direction ``d`` of the method's own loss.
    awp_warmup (int, 0): first (0-indexed) epoch with AWP.
    awp_proxy_lr (float, 0.01): learning rate of the reference's proxy SGD step that gives ``d`` (it cancels in
        the per-layer normalisation up to rounding; AT-AWP 0.01, TRADES-AWP 0.1).
    cw_eps_alpha (float, 0): α of RobustLT's class-wise budgets (Zhang et al., CVPR 2026); > 0 gives class ``c``
        ``ε_c = (1 − α)·ε + τ·sqrt(log(n_max/n_c))·ε`` with τ making the sample-weighted mean budget ε.
    cw_eps_warmup (float, 0): β, the budgets grow linearly over the first β·epochs epochs (0 = from the start).
    cw_eps_start (str, "global"): radius of the random start under class-wise budgets, ``global`` (ε, projected on
        the class budget after the first step, as RobustLT's code) or ``class`` (ε_c).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    prediction_loss: ClassVar[str] = "ce"
    weight_schedule: ClassVar[str] = "uniform"
    needs_clean_logits: ClassVar[bool] = False  # the loss also sees f(x) (TRADES, MART, RoBal)
    sampler: ClassVar[str] = "uniform"  # methods.samplers: how an epoch draws its training examples
    attack_objective: ClassVar[str] = "ce"  # methods.objectives: what the training attack maximises
    attack_start_std: ClassVar[float | None] = None  # Gaussian start x + σ·N(0,1) instead of uniform in the ball
    card: ClassVar[dict | None] = None  # where it comes from: {paper, venue, year, repository} (bench leaderboard)
    default_augment: ClassVar[str | None] = None  # the augmentation a cell gets unless the suite names one
    # the training attack as the reference crafts it: {"bn_mode": "eval", "start": "positive", "clip_start": False};
    # absent = SRAT's protocol (train-mode batch norm, uniform start in [-eps, eps] clipped to the valid range before
    # the first gradient); below bench.toml in the precedence chain
    attack_recipe: ClassVar[Mapping[str, Any]] = {}
    needs_features: ClassVar[bool] = False  # the loss reads LossInputs.features (the penultimate features h)
    # fields added after cells were stored with other behaviour: {field: the value that behaviour had}, for a stored
    # record that lacks the field (methods.registry.as_stored, used by `bench evaluate`)
    legacy: ClassVar[Mapping[str, Any]] = {}

    beta: float = 0.9999
    normalize: str = "max"
    drw_epoch: int | None = None
    under_weight: float | None = None
    lam: float = 0.0
    temperature: float = 0.07
    classifier: str = "linear"
    awp_gamma: float = 0.0
    awp_warmup: int = 0
    awp_proxy_lr: float = 0.01
    cw_eps_alpha: float = 0.0
    cw_eps_warmup: float = 0.0
    cw_eps_start: str = "global"

    def __post_init__(self) -> None:
        self._check(0.0 <= self.beta < 1.0, "beta", "in [0, 1)")
        self._check(self.normalize in NORMALIZATIONS, "normalize", f"one of {', '.join(NORMALIZATIONS)}")
        self._check(self.drw_epoch is None or self.drw_epoch >= 0, "drw_epoch", ">= 0")
        self._check(self.under_weight is None or self.under_weight > 0, "under_weight", "> 0")
        self._check(self.lam >= 0, "lam", ">= 0")
        self._check(self.temperature > 0, "temperature", "> 0")
        self._check(self.classifier in CLASSIFIERS, "classifier", f"one of {', '.join(CLASSIFIERS)}")
        self._check(self.awp_gamma >= 0, "awp_gamma", ">= 0")
        self._check(self.awp_warmup >= 0, "awp_warmup", ">= 0")
        self._check(self.awp_proxy_lr > 0, "awp_proxy_lr", "> 0")
        self._check(0 <= self.cw_eps_alpha <= 1, "cw_eps_alpha", "in [0, 1]")
        self._check(self.cw_eps_warmup >= 0, "cw_eps_warmup", ">= 0")
        self._check(self.cw_eps_start in CW_EPS_STARTS, "cw_eps_start", f"one of {', '.join(CW_EPS_STARTS)}")

    def _check(self, ok: bool, field: str, allowed: str) -> None:
        if not ok:
            raise ValueError(f"method {self.name}: {field} = {getattr(self, field)!r} is invalid; must be {allowed}")

    @property
    def uses_projection(self) -> bool:
        """Whether the loss needs the projection head's output (SRAT's separation term)."""
        return self.lam > 0

    @property
    def logit_scale(self) -> float:
        """The factor the training loss applies to the logits (1; LDAM's ``s``)."""
        return 1.0

    @property
    def inference_scale(self) -> float:
        """The factor the trained model applies to its logits for every prediction and evaluation attack (1: the
        logits the loss saw before its own scaling; RoBal's test-time ``PostProc`` head: its ``eval_scale``)."""
        return 1.0

    @property
    def scale_sensitive(self) -> bool:
        """Whether the method trains on logits × :attr:`logit_scale` but is attacked at another scale (LDAM: at
        ``1×``, methods.md §3): PGD's cross-entropy then sees another softmax temperature than training did, which
        can inflate robustness; ``bench.guards``' ``scaled-pgd`` guard re-attacks such runs at the training scale."""
        return self.logit_scale != self.inference_scale

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

    def attack_loss(self, clean_logits: torch.Tensor | None, state: dict | None = None):
        """The per-sample loss the training attack maximises (``None`` = cross-entropy), see ``methods.objectives``;
        ``state`` is the run's method state (:meth:`init_state`), for objectives that depend on it (REAT)."""
        from methods.objectives import OBJECTIVES

        return OBJECTIVES.get(self.attack_objective).build(clean_logits)

    def attack_on(self, epoch: int) -> bool:
        """The stage schedule: whether epoch ``epoch`` (0-indexed) trains on adversarial examples. A method with a
        natural first stage (TAET) returns ``False`` there; a cell trained naturally never attacks."""
        return True

    def attack_budget(self, epoch: int, epochs: int, targets: torch.Tensor, eps: float, alpha: float,
                      class_counts: torch.Tensor) -> AttackBudget:
        """The training attack's ε, step and start radius for a batch (labels ``targets``); ``eps`` and ``alpha``
        are the cell's ``train_attack``. Default: those, unless class-wise budgets are on (``cw_eps_alpha`` > 0 or
        ``cw_eps_warmup`` > 0): then per-sample ``ε_i = ε_{y_i}·min(epoch / (β·epochs), 1)`` and
        ``α_i = α·ε_i/ε`` (``methods.losses_lt.classwise_budgets``)."""
        if self.cw_eps_alpha == 0 and self.cw_eps_warmup == 0:
            return AttackBudget(eps, alpha)
        from methods import losses_lt

        eps_i, alpha_i = losses_lt.classwise_budgets(targets, class_counts, eps, alpha, epoch, epochs,
                                                     self.cw_eps_alpha, self.cw_eps_warmup)
        return AttackBudget(eps_i, alpha_i, eps if self.cw_eps_start == "global" else eps_i)

    def around_step(self, step: StepContext) -> AbstractContextManager:
        """A context manager around one optimisation step (forward, backward, ``optimizer.step()``). With
        ``awp_gamma`` > 0 from epoch ``awp_warmup`` on, adversarial weight perturbation: on entry every weight
        matrix / kernel ``w`` moves by ``γ·‖w‖·d/‖d‖`` (``d``: one proxy SGD ascent step of ``step.loss()``), on
        exit the same vector is subtracted (``methods.perturb``)."""
        if self.awp_gamma > 0 and step.epoch >= self.awp_warmup:
            from methods.perturb import adversarial_weight_perturbation

            return adversarial_weight_perturbation(step.model, step.loss, self.awp_gamma, self.awp_proxy_lr)
        import contextlib

        return contextlib.nullcontext()

    def init_state(self, class_counts: torch.Tensor) -> dict:
        """The run-level state (a dict of tensors on the counts' device; empty = stateless), created once per run
        and saved in every checkpoint."""
        return {}

    def observe(self, state: dict, inputs: LossInputs) -> None:
        """Update ``state`` in place after a batch's optimisation step (``inputs`` as the loss saw them)."""

    def end_epoch(self, state: dict, epoch: int) -> None:
        """Update ``state`` in place at the end of epoch ``epoch``, before the checkpoint is written."""

    def params(self) -> dict:
        """The resolved hyperparameters a cell stores (``method_params``, part of its identity): every field, less
        the capability fields (AWP, class-wise budgets) at their switched-off defaults."""
        out = dataclasses.asdict(self)
        for key, default in CAPABILITY_DEFAULTS.items():
            if out[key] == default:
                del out[key]
        return out

    @property
    def attack_uses_clean(self) -> bool:
        """Whether the training attack's objective needs the clean logits (computed without gradients)."""
        from methods.objectives import OBJECTIVES

        return OBJECTIVES.get(self.attack_objective).needs_clean

    def inference_bias(self, class_counts) -> torch.Tensor | None:
        """A ``[C]`` bias the trained model adds to its (:attr:`inference_scale`-scaled) logits at inference
        (``None`` = none)."""
        return None

    def attack_recipe_text(self) -> str:
        """The training attack's recipe in words (``bench list methods``): batch norm, start, objective."""
        bn_mode = self.attack_recipe.get("bn_mode", "train")
        if self.attack_start_std is not None:
            start = f"x + {self.attack_start_std:g}·N(0,1)"
        else:
            start = "U[0, eps]" if self.attack_recipe.get("start") == "positive" else "U[-eps, eps]"
        if not self.attack_recipe.get("clip_start", True):
            start += " unclipped"
        objective = "its own loss" if type(self).attack_loss is not Method.attack_loss else self.attack_objective
        return f"{bn_mode}-mode BN, start {start}, maximises {objective}"

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
        if self.inference_scale != 1.0:
            out.append(f"inference scale {self.inference_scale:g}")
        if self.needs_features:
            out.append("features")
        if type(self).attack_on is not Method.attack_on:
            out.append("stage schedule")
        if self.cw_eps_alpha > 0 or self.cw_eps_warmup > 0:
            out.append(f"class-wise eps (alpha {self.cw_eps_alpha:g}, warm-up {self.cw_eps_warmup:g})")
        if self.awp_gamma > 0:
            out.append(f"AWP gamma {self.awp_gamma:g}" + (f" from epoch {self.awp_warmup}" if self.awp_warmup else ""))
        if type(self).init_state is not Method.init_state:
            out.append("run state")
        if type(self).attack_loss is not Method.attack_loss:
            out.append("own attack objective")
        if self.default_augment:
            out.append(f"augment {self.default_augment}")
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
