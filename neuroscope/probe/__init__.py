"""Stage f, the probe of one's own text (`f_probe.py`, and the notebook's probe)."""

# the modules that later stages may import (the rest is this stage's own; tests/test_structure.py checks)
INTERFACE = ()
