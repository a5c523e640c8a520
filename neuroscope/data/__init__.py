"""Stage a, the dataset (`a_dataset.py`): text sources, tokenisation and the selection of documents, the tokenized
dataset on disk."""

# the modules that later stages may import (the rest is this stage's own; tests/test_structure.py checks)
INTERFACE = ("dataset_store", "tokenization", "tokenized")
