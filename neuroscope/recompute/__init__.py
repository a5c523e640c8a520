"""Stage b2, the recomputation (`b2_recompute.py`, and the first half of `d_recompute_vis.py`): chosen neurons'
g, u and a on their example documents, checked against the statistics, their windows and next-token effects."""

# the modules that later stages may import (the rest is this stage's own; tests/test_structure.py checks)
INTERFACE = ("examples", "locate", "next_token", "recomputed", "windows")
