"""Constants that scripts show on their command lines or that several modules share.

This module imports nothing heavy, so that `--help` answers at once.
"""

from __future__ import annotations

import math
from pathlib import Path

# ---- models
DEFAULT_MODEL = "smollm2-135m"  # the embedded default (SmolLM2-135M-Instruct, GGUF in a PyPI package)
LOADERS = ("auto", "lowmem", "tl")  # weight readers: low-memory safetensors/GGUF, TransformerLens bridge

# ---- cosines and IO classes (paper, Section 3 and Section 5)
COSINE_NAMES = ("gatelin", "gateout", "linout")  # cos(w_gate, w_in), cos(w_gate, w_out), cos(w_in, w_out)
DEFAULT_THRESHOLD = 0.5  # the paper's class threshold t
RULES = ("corrected", "legacy_copysign")  # typical test: the authors' later code / the first code release
CLASS_NAMES: tuple[str, ...] = (
    "enrichment",
    "atypical enrichment",
    "conditional enrichment",
    "atypical conditional enrichment",
    "proportional change",
    "atypical proportional change",
    "orthogonal output",
    "depletion",
    "atypical depletion",
    "conditional depletion",
    "atypical conditional depletion",
)
CLASS_WORDS = tuple(name.replace(" ", "_") for name in CLASS_NAMES)  # the class names as command-line words
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)  # the per-layer quartiles of Section 5
RANDOM_INTERVAL_MASS = 0.95  # the random-direction baseline covers this much of the Beta distribution

# ---- functional roles (paper, Section 6 and Appendix E)
PAPER_N_PARTITION = 1000  # partition neurons in the paper (of OLMo-7B-0424's 352,256)
PARTITION_CAP = 0.05  # the default takes at most this fraction of a small model's neurons
SELECTIVE_KURTOSIS = 3.0  # excess kurtosis of a Laplace distribution: a lower prediction threshold warns
ATTENTION_COSINE = math.sqrt(0.5)  # |cos(w_out, q)| above this makes an attention (de)activation neuron
DEFAULT_TOP_TOKENS = 64  # rows of a weight-based token table
DEFAULT_N_ENTROPY = 2  # the paper's entropy neurons: the top 2 of the last layer, chosen from a box plot

# ---- numerics
NORM_EPS = 1e-12  # floor of a vector norm before dividing by it

# ---- files
ARTIFACT_FORMATS = ("pt", "pickle")  # torch.save (default) or the seed's pickles of numpy arrays
PLOT_FORMATS = ("pdf", "png")
PACKAGE_DIR = Path(__file__).resolve().parent


def default_results_dir() -> Path:
    """`results/` of the repository when the package runs from a checkout, else `./results`."""
    repo = PACKAGE_DIR.parent
    return repo / "results" if (repo / "pyproject.toml").exists() else Path.cwd() / "results"


DEFAULT_RESULTS = default_results_dir()

# ---- neuroscope (activation-based analysis)
EMBEDDED_DATASET = "pydoc"  # Python's documentation topics (pydoc_data): English text that needs no network
SHUFFLE_SEED = 2512800  # the seed's dataset shuffle
POOL_PER_MTOKEN = 4000  # the seed's pool: documents per million tokens asked for
STREAM_BUFFER = 10_000  # documents in the shuffle buffer of a_dataset.py --streaming
MAX_TOKENIZE_PROCESSES = 8  # a_dataset.py's default --num_proc: half the CPU cores (the tokenizer threads), at most this many
MIN_DOCUMENTS_PER_PROCESS = 500  # fewer documents per tokenizing process are not worth a process
DEFAULT_MTOKENS = 20.0  # the paper's 20M tokens
DEFAULT_MAX_LENGTH = 1024
DEFAULT_EXAMPLES = 16  # top-k and bottom-k documents per neuron
DEFAULT_BATCH_SIZE = 8
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_ACTIVATIONS = "activations"  # folder of the statistics inside --datadir
DEFAULT_PAGE_TOKENS = 20  # promoted and suppressed tokens on a neuron page

# ---- class ablations ("Weakening Neurons" follow-up)
ABLATION_CONDITIONS = ("gate+post+", "gate+post-", "gate-post+", "gate-post-")  # (sign of g, sign of a); + means > 0
ABLATION_MODES = ("zero", "mean")
