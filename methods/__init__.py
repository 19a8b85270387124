"""Training methods as registered plug-ins: ``methods.get("srat-ldam", lam=1.0)``, ``methods.names()``,
``methods.for_cell(config)`` (a cell's method, run-dependent defaults filled in).

Importing this package registers the paper's eleven methods, in the order of its tables, then the field's other
answers to imbalanced robustness (TRADES, MART, Balanced Softmax, logit adjustment, RoBal, resampling).
"""

from methods.base import LossInputs, Method
from methods.registry import METHODS, for_cell, get, names, register

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

__all__ = ["METHODS", "LossInputs", "Method", "for_cell", "get", "names", "register"]
