"""Stage e, experiments on whole IO classes (`e_frequency.py`, `e_ablate.py`, `e_generate.py`, `e_recall.py`; the authors' follow-up): sets of
neurons, activation frequency by class, ablations and their reports."""

# the modules that later stages may import (the rest is this stage's own; tests/test_structure.py checks)
INTERFACE = ("neuron_sets",)
