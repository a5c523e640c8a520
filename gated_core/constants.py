"""The constants both packages share: the default model and weight readers, file formats, the results tree,
forward-pass dtypes.

This module imports nothing heavy, so that `--help` answers at once.
"""

from __future__ import annotations

from pathlib import Path

# ---- models
DEFAULT_MODEL = "smollm2-135m"  # the embedded default (SmolLM2-135M-Instruct, GGUF in a PyPI package)
LOADERS = ("auto", "lowmem", "tl")  # weight readers: low-memory safetensors/GGUF, TransformerLens bridge
DTYPES = ("float32", "bfloat16", "float16")  # of a forward pass

# ---- files
ARTIFACT_FORMATS = ("pt", "pickle")  # torch.save (default) or the seed's pickles of numpy arrays
PLOT_FORMATS = ("pdf", "png")
PACKAGE_DIR = Path(__file__).resolve().parent


def default_results_dir() -> Path:
    """`results/` of the repository when the package runs from a checkout, else `./results`."""
    repo = PACKAGE_DIR.parent
    return repo / "results" if (repo / "pyproject.toml").exists() else Path.cwd() / "results"


DEFAULT_RESULTS = default_results_dir()
