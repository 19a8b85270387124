"""Which cells train together: fused groups, decided from the cells' configs and their methods' capabilities.

Cells fuse when they share everything the stacked pass shares — the data (dataset, its arguments, imbalance,
seed), the architecture (model and the method's classifier), the schedule and batch size, the training attack
and the precision policy — and differ only in what each member carries itself: its method (loss, class weights,
attack objective, budget and start, sampler, stage schedule, run state, inference bias) and its augmentation.
A cell is never fused when its method or config needs what the fused trainer does not do yet; :func:`why_not`
says what, in words, from capabilities and keys (never a method's name).

The ``fuse`` setting (``bench.toml``'s ``[bench]`` or a suite's top level): ``"off"``; ``"auto"``; or a whole number
``N`` ≥ 1, the largest group (fused on any device where the cell qualifies). ``"auto"`` fuses, in groups of up to
:data:`AUTO_LIMIT`, the models :data:`AUTO_MODELS` names for the device: where stacking was measured to pay. On 2 CPU
cores that is cnn-small (11 members 2.0× the unfused runner's throughput, ``benchmarks/bench_fusion.py``; the quick
suite about 2× faster end to end) and ``linear``; on a GPU nothing yet, since the stacked resnet18 (``--case
resnet18-cuda``) is not measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.cell import Cell
from bench.errors import BenchError

FUSE_VALUES = ("auto", "off")
# bench.fusion.stacked.STACKED_BACKBONES, by the models' names. cnn-small and linear: bit-identical across company
# on the CPU; resnet18 (grouped convolutions, for the GPU): within float tolerance of the unfused path only, and
# on CUDA fp32 only (precision = "fp32"; "auto" means bf16 there, which why_not refuses).
STACKED_MODELS = ("cnn-small", "linear", "resnet18")
# Keys a member may hold on its own; every other key of the config must be equal across a group.
MEMBER_KEYS = ("method", "method_args", "method_params", "augment", "eval_attacks", "eval_batch_size", "features",
               "eval_precision", "suite")
AUTO_LIMIT = 16  # members per group under "auto"
# Models "auto" fuses, per device type: those measured to train faster stacked there (README, Speed). Only the
# bit-identical family on the CPU, so a cell's numbers under "auto" do not depend on which cells share its run.
AUTO_MODELS: dict[str, tuple[str, ...]] = {"cpu": ("cnn-small", "linear")}


def check_fuse(value: Any, where: str) -> Any:
    """``value`` if it is a valid ``fuse`` setting, else a one-line error naming the allowed ones."""
    if value in FUSE_VALUES or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise BenchError(f"{where}: fuse = {value!r} is unknown; valid: \"auto\", \"off\" or a whole number >= 1")


def group_limit(fuse: Any, device_type: str) -> int:
    """The largest group for a ``fuse`` setting on a device; 0 = no fusion."""
    if fuse == "off" or (fuse == "auto" and not AUTO_MODELS.get(device_type)):
        return 0
    return AUTO_LIMIT if fuse == "auto" else int(fuse)


def why_not(config: Mapping[str, Any], device_type: str, fuse: Any = None) -> str | None:
    """Why a cell cannot train fused (``None`` = it can): the first unsupported need, in words. Under
    ``fuse = "auto"`` a stackable model that ``auto`` does not fuse on this device is one more reason."""
    if config["model"] not in STACKED_MODELS:
        return f"model {config['model']} has no stacked forward (fused: {', '.join(STACKED_MODELS)})"
    if fuse == "auto" and config["model"] not in AUTO_MODELS.get(device_type, ()):
        return (f"fuse = \"auto\" fuses {', '.join(AUTO_MODELS.get(device_type, ())) or 'no model'} on {device_type}"
                f" (where stacking was measured to pay); fuse = N fuses {config['model']} too")
    if config.get("precision", "auto") == "bf16" or (device_type == "cuda" and config.get("precision") != "fp32"):
        return "bf16 training (the fused path is fp32)"
    if device_type == "cuda" and config.get("compile") is True:
        return "a compiled backbone"
    return None


def _key(config: Mapping[str, Any], classifier: str) -> str:
    import json

    shared = {k: v for k, v in config.items() if k not in MEMBER_KEYS}
    return json.dumps([shared, classifier], sort_keys=True, default=str)


@dataclass(frozen=True)
class Plan:
    """The cells in run order as units: a fused group (``fused`` True, one or more cells) or one unfused cell;
    ``reasons`` maps an unfused cell's hash to why it is not fused (when fusion is on)."""

    units: list[tuple[bool, list[Cell]]]
    reasons: dict[str, str]


def plan(cells: Sequence[Cell], fuse: Any, device_type: str) -> Plan:
    """Group ``cells`` for a ``fuse`` setting; a group keeps the order of its first cell, groups hold at most
    the setting's number of members."""
    limit = group_limit(fuse, device_type)
    if limit == 0:  # before importing the methods (torch): a driver without fusion stays light
        return Plan([(False, [c]) for c in cells], {})
    import methods

    units: list[tuple[bool, list[Cell]]] = []
    open_groups: dict[str, list[Cell]] = {}
    reasons: dict[str, str] = {}
    for cell in cells:
        reason = why_not(cell.config, device_type, fuse)
        if reason is not None:
            reasons[cell.cell_hash] = reason
            units.append((False, [cell]))
            continue
        key = _key(cell.config, methods.for_cell(dict(cell.config)).classifier)
        group = open_groups.get(key)
        if group is None or len(group) >= limit:
            group = open_groups[key] = []
            units.append((True, group))
        group.append(cell)
    return Plan(units, reasons)
