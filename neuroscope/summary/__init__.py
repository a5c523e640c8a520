"""Stage b (beside the pass), the authors' published neuron summary (`b_import_summary.py`, `b_export_summary.py`):
its columns (`schema`), read into this project's statistics (`reading`), written from them (`writing`), and the pass
that computes the published columns the statistics do not hold (`case_pass`)."""

# the modules that later stages may import (the rest is this stage's own; tests/test_structure.py checks)
INTERFACE = ("schema",)
