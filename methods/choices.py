"""The allowed values of the hyperparameters that more than one methods module checks.

Why this module exists: :mod:`methods.base` (validating a method's hyperparameters) and :mod:`methods.weights`
(validating the arguments of the weight formulas) both need :data:`NORMALIZATIONS`, and ``methods.base`` calls
``methods.weights`` to compute an epoch's weights. With the tuple in ``methods.base``, ``methods.weights``
imported it back: an import circle. Here, in a leaf that imports nothing, each side reads it and the dependency
runs one way (base → weights). Torch-free, like the rest of the method contract.
"""

# the model's classifier head (methods.base.Method.classifier): plain, cosine (LDAM paper), RoBal's CosPlus
CLASSIFIERS = ("linear", "cosine", "cosplus")
NORMALIZATIONS = ("max", "sum")  # class-balanced weight normalisations (methods.weights.class_balanced)
