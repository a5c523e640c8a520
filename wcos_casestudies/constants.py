"""The paper's constants (Sections 3, 5 and 6): cosines, IO classes, functional roles. The constants both packages
share are in `gated_core/constants.py`, neuroscope's own in `neuroscope/constants.py`.

This module imports nothing heavy, so that `--help` answers at once.
"""

from __future__ import annotations

import math

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
