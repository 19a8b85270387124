"""Training methods as registered plug-ins: ``methods.get("srat-ldam", lam=1.0)``, ``methods.names()``.

Importing this package registers the paper's eleven methods, in the order of its tables.
"""

from methods.base import LossInputs, Method
from methods.registry import METHODS, get, names, register

# Registration order is the row order of the paper's tables.
from methods import plain as _plain  # noqa: E402,F401  ce, focal, ldam
from methods import class_balanced as _class_balanced  # noqa: E402,F401  cb-reweight, cb-focal
from methods import deferred as _deferred  # noqa: E402,F401  drcb-ce, drcb-focal, drcb-ldam
from methods import srat as _srat  # noqa: E402,F401  srat-ce, srat-focal, srat-ldam

__all__ = ["METHODS", "LossInputs", "Method", "get", "names", "register"]
