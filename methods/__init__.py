"""Training methods as registered plug-ins: ``methods.get("srat-ldam", lam=1.0)``, ``methods.names()``,
``methods.for_cell(config)`` (a cell's method, run-dependent defaults filled in).

Importing this package registers the paper's eleven methods, in the order of its tables, then the field's other
answers to imbalanced robustness (TRADES, MART, Balanced Softmax, logit adjustment, RoBal, resampling), then the
baselines of the 2025-2026 papers (AWP, AT-BSL with augmentation, REAT, RobustLT, TAET).
"""

from methods.base import LossInputs, Method
from methods.registry import (METHODS, as_stored, default_attack_recipe, default_augment, for_cell, get, names,
                              register)

# Registration order is the row order of the paper's tables.
from methods import plain as _plain  # noqa: E402,F401  ce, focal, ldam
from methods import class_balanced as _class_balanced  # noqa: E402,F401  cb-reweight, cb-focal
from methods import deferred as _deferred  # noqa: E402,F401  drcb-ce, drcb-focal, drcb-ldam
from methods import srat as _srat  # noqa: E402,F401  srat-ce, srat-focal, srat-ldam
from methods import trades as _trades  # noqa: E402,F401  trades, srat-trades
from methods import mart as _mart  # noqa: E402,F401  mart
from methods import balanced_softmax as _balanced_softmax  # noqa: E402,F401  balanced-softmax
from methods import logit_adjust as _logit_adjust  # noqa: E402,F401  logit-adjust, logit-adjust-posthoc
from methods import robal as _robal  # noqa: E402,F401  robal
from methods import resample as _resample  # noqa: E402,F401  resample
# The baselines of the 2025-2026 long-tailed robustness papers (issue 18), after the rest.
from methods import awp as _awp  # noqa: E402,F401  awp, trades-awp
from methods import at_bsl as _at_bsl  # noqa: E402,F401  at-bsl-ra, at-bsl-aua
from methods import reat as _reat  # noqa: E402,F401  reat
from methods import robustlt as _robustlt  # noqa: E402,F401  robustlt
from methods import taet as _taet  # noqa: E402,F401  taet

__all__ = ["METHODS", "LossInputs", "Method", "as_stored", "default_attack_recipe", "default_augment", "for_cell", "get",
           "names", "register"]
