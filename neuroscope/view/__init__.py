"""Stages c and d, the view (`c_neuron_vis.py`, `d_recompute_vis.py`): what a page says about a neuron, one
neuron's view as data, the single pages, the whole-model viewer and its search, the HTML and the page's
scripts (`assets/`)."""

# the modules that later stages may import (the rest is this stage's own; tests/test_structure.py checks)
INTERFACE = ("checksums", "html", "neuron_view", "pages", "parts", "viewer", "viewer_copy")
