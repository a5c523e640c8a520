"""The constants of the activation-based analysis: the dataset build, the pass, the pages, the class ablations.

This module imports nothing heavy, so that `--help` answers at once.
"""

from __future__ import annotations

# ---- datasets
EMBEDDED_DATASET = "pydoc"  # Python's documentation topics (pydoc_data): English text that needs no network
SHUFFLE_SEED = 2512800  # the seed's dataset shuffle
POOL_PER_MTOKEN = 4000  # the seed's pool: documents per million tokens asked for
STREAM_BUFFER = 10_000  # documents in the shuffle buffer of a_dataset.py --streaming
MAX_TOKENIZE_PROCESSES = 8  # a_dataset.py's default --num_proc: half the CPU cores (the tokenizer threads), at most this many
MIN_DOCUMENTS_PER_PROCESS = 500  # fewer documents per tokenizing process are not worth a process
DEFAULT_MTOKENS = 20.0  # the paper's 20M tokens
DEFAULT_MAX_LENGTH = 1024

# ---- the activation pass and the pages
DEFAULT_EXAMPLES = 16  # top-k and bottom-k documents per neuron
DEFAULT_TYPICAL = 4  # typical examples per neuron, sign combination of (g, u) and band of |a|
DEFAULT_BATCH_SIZE = 8
DEFAULT_ACTIVATIONS = "activations"  # folder of the statistics inside --datadir
DEFAULT_PAGE_TOKENS = 20  # promoted and suppressed tokens on a neuron page

# ---- class ablations ("Weakening Neurons" follow-up)
ABLATION_CONDITIONS = ("gate+post+", "gate+post-", "gate-post+", "gate-post-")  # (sign of g, sign of a); + means > 0
ABLATION_MODES = ("zero", "mean")
