"""The layout of a model's results folder (`results/<model>/[<settings>/]`): the one place that names where each
script writes, so that the writers and the index page (`wcos_casestudies/report.py`) agree on the names, and the
index asks `find_outputs` what exists instead of knowing the other packages' folders.

    data.pt, roles.pt, case_studies.*   main.py, casestudies.py (the folder itself)
    tokens/                             casestudies.py: the case studies' token tables (Section 6)
    neuroscope/index.html, L*/N*/       d_recompute_vis.py, c_neuron_vis.py: one page per neuron
    neuroscope/<viewer>/viewer.html     d_recompute_vis.py --viewer (default name `viewer`)
    probe/<name>/probe.html             f_probe.py
    connections/                        g_connections.py
    frequency/                          e_frequency.py
    ablation/<dataset>/                 e_ablate.py
    ablation/generations/<name>/        e_generate.py
    ablation/recall/<name>/             e_recall.py
    compare/<other model>/              compare.py: the classes against another model's
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TOKENS_FOLDER = "tokens"
NEUROSCOPE_FOLDER = "neuroscope"
DEFAULT_VIEWER = "viewer"
STATISTICS_ONLY_FOLDER = "statistics-only"  # below NEUROSCOPE_FOLDER: pages made without the model's weights
PROBE_FOLDER = "probe"
CONNECTIONS_FOLDER = "connections"
FREQUENCY_FOLDER = "frequency"
ABLATION_FOLDER = "ablation"
COMPARE_FOLDER = "compare"
GENERATIONS_FOLDER = "generations"  # below ABLATION_FOLDER
RECALL_FOLDER = "recall"  # below ABLATION_FOLDER
INDEX_PAGE = "index.html"  # a folder's index: the model's, the neuron pages'
VIEWER_PAGE = "viewer.html"
PROBE_PAGE = "probe.html"


@dataclass(frozen=True)
class Output:
    """One kind of output a reader opens first: where it is (glob patterns inside the results folder, the first that
    matches wins) and what it is."""

    patterns: tuple[str, ...]
    what: str


# what the top of a model's index lists, in this order
START_HERE = (
    Output((f"{NEUROSCOPE_FOLDER}/{DEFAULT_VIEWER}/{VIEWER_PAGE}", f"{NEUROSCOPE_FOLDER}/*/{VIEWER_PAGE}"),
           "the viewer: every neuron of the model, filterable and sortable"),
    Output((f"{PROBE_FOLDER}/*/{PROBE_PAGE}",), "probe pages: the neurons' values on a text of one's own"),
    Output((f"{NEUROSCOPE_FOLDER}/{INDEX_PAGE}",), "the case-study neurons' own pages"),
    Output(("case_studies.csv",), "why each case-study neuron was chosen (Section 6)"),
    Output((f"{CONNECTIONS_FOLDER}/class_connections.png", f"{CONNECTIONS_FOLDER}/connections.csv"),
           "connections: which neurons feed each neuron's gate and linear input, which read it, by IO class"),
    Output((f"{FREQUENCY_FOLDER}/*.png", f"{FREQUENCY_FOLDER}/*.csv"), "activation frequency by IO class"),
    Output((f"{ABLATION_FOLDER}/*/*.png", f"{ABLATION_FOLDER}/*/*.csv"), "class ablations: do the classes matter?"),
    Output((f"{ABLATION_FOLDER}/{GENERATIONS_FOLDER}/*/generations.html",),
           "generations under ablation: the model's continuations with a class ablated, side by side"),
    Output((f"{ABLATION_FOLDER}/{RECALL_FOLDER}/*/recall.csv",), "factual recall under ablation: known facts' probability"),
    Output((f"{COMPARE_FOLDER}/*/transitions.png", f"{COMPARE_FOLDER}/*/transitions.csv"),
           "classes against another model's (checkpoints, base and instruct): which neurons changed class"),
)

# the pages a model's index links in its own section: neuron page indexes, viewers, probe pages
PAGE_PATTERNS = (f"{NEUROSCOPE_FOLDER}/{INDEX_PAGE}", f"*/{NEUROSCOPE_FOLDER}/{INDEX_PAGE}",
                 f"{NEUROSCOPE_FOLDER}/*/{VIEWER_PAGE}", f"{PROBE_FOLDER}/*/{PROBE_PAGE}")
# folders whose contents the index shows in their own sections, not as analyses
OWN_SECTION_FOLDERS = (NEUROSCOPE_FOLDER, TOKENS_FOLDER)


def find_outputs(folder: Path, output: Output) -> list[Path]:
    """The files of `output` in the results folder `folder`, sorted: those of its first pattern that matches."""
    return next((sorted(folder.glob(pattern)) for pattern in output.patterns if any(folder.glob(pattern))), [])


def find_pages(folder: Path) -> list[Path]:
    """Every page the index links in its pages section, sorted."""
    return sorted({path for pattern in PAGE_PATTERNS for path in folder.glob(pattern)})
