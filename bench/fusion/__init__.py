"""Fused cells (issue 16): several cells of one (dataset, imbalance, seed, model, schedule) trained as one stacked
model. :mod:`.groups` decides which cells fuse, :mod:`.stacked` computes the stacked passes, :mod:`.train` trains
a group, :mod:`.run` runs a group through the ledger as the runner runs one cell."""
