"""Stage b, the activation pass (`b_activations.py`): one streaming pass over the dataset into every neuron's
statistics and example lists; `store.py` is the statistics' file format and their one checked reader."""

# the modules that later stages may import (the rest is this stage's own; tests/test_structure.py checks)
INTERFACE = ("activations", "store")
