"""The columns of the authors' published neuron summary, one home for them.

GLUScope (Gerstner & Schütze's neuron viewer, arXiv 2602.23826) published, per model, a dataset with one row per
neuron (row = layer * d_mlp + neuron) of its activations on a text dataset (`sjgerstner/dolma-small` for OLMo-7B):
- `layer`, `neuron`;
- per sign case of (gate pre-activation g, linear input u), strict signs (`CASES`, in the order of this project's
  sign combinations): `<case>_freq`, the fraction of all tokens (the document's first token included) in that case;
- per case and value (`VALUES`: the activation a, u, g and act(g)): `<case>_<value>_mean` (NaN where the case never
  occurs), and, except act(g) in the two cases of an open gate (`listed`), `<case>_<value>_max_values` and
  `<case>_<value>_max_indices`: the `PUBLISHED_K` dataset rows (documents) of largest |value| in that case, each
  with the value of its most extreme token (signed), by decreasing |value|; no token positions; a case met in fewer
  documents is padded with value 0.

This project's export writes those columns and, under `EXTRA_PREFIX`, every tensor of its statistics per neuron
(`extra_column`), with the run's metadata in the dataset's description (`DESCRIPTION_KEY`; beside parquet files,
`META_FILE`), so that an import of
its own export gives back exactly the statistics it was made from.
"""

from __future__ import annotations

from neuroscope.activation_pass.activations import SIGN_COMBINATIONS

CASES = ("gate+_in+", "gate+_in-", "gate-_in+", "gate-_in-")  # SIGN_COMBINATIONS' order: (g > 0, u > 0), ...
VALUES = ("hook_post", "hook_pre_linear", "hook_pre", "swish")  # a, u, g, act(g) (whatever the activation function)
ACTIVATION = "hook_post"  # the value this project's statistics are of
PUBLISHED_K = 16  # examples per case and value in the published summaries
POSITIVE_CASES = (0, 3)  # the cases where a = act(g) * u > 0 (g, u of one sign); the other two: a < 0
NEGATIVE_CASES = (1, 2)
EXTRA_PREFIX = "neuroscope_"  # this project's columns: every tensor of its statistics, per neuron
DESCRIPTION_KEY = "neuroscope_statistics"  # the key of the run's metadata in the dataset's description (JSON)
META_FILE = "neuroscope_statistics.json"  # the same beside parquet files, which keep no description

assert len(CASES) == len(SIGN_COMBINATIONS)


def listed(case: str, value: str) -> bool:
    """Whether the summary has top lists of `value` in `case` (not of act(g) where the gate is open)."""
    return value != "swish" or case.startswith("gate-")


def freq_column(case: str) -> str:
    return f"{case}_freq"


def mean_column(case: str, value: str) -> str:
    return f"{case}_{value}_mean"


def list_columns(case: str, value: str) -> tuple[str, str]:
    """The (values, dataset rows) columns of the top list of `value` in `case`."""
    return f"{case}_{value}_max_values", f"{case}_{value}_max_indices"


def published_columns() -> list[str]:
    """Every column of a published summary, in the published order."""
    columns = ["layer", "neuron", *(freq_column(case) for case in CASES)]
    columns += [mean_column(case, value) for case in CASES for value in VALUES]
    columns += [name for case in CASES for value in VALUES if listed(case, value) for name in list_columns(case, value)]
    return columns


def extra_column(name: str) -> str:
    """The column that holds the statistics tensor `name` (a key of the statistics file), per neuron flattened."""
    return f"{EXTRA_PREFIX}{name}"
