"""Stage g, connections between neurons (`g_connections.py`): one run over the weights, with the statistics'
mean |a| for the expected contributions."""

# the modules that later stages may import (the rest is this stage's own; tests/test_structure.py checks)
INTERFACE = ()
