"""What both packages share: errors, the command-line vocabulary, artifacts, fingerprints, locks and model
loading (names, checkpoints, shapes, weight readers, tokenizers)."""

__version__ = "0.1.0"
