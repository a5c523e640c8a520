"""What every stage of the neuroscope uses: the hooks on the gated MLP (and the final norm's input, the logits),
batches of documents for a model, the process group of a torchrun launch, the pass's histogram bins and ranked
example lists."""

# the modules that later stages may import (the rest is this stage's own; tests/test_structure.py checks)
INTERFACE = ("hooks", "batches", "distributed", "histogram", "ranked")
