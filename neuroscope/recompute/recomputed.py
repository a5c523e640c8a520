"""`activations.pt` beside a neuron's page: the recomputed gate (g), linear (u) and activation (a) values of every
selected document of one neuron, and the one checked reader of them.

The file records the fingerprint of the statistics it was recomputed from (`Statistics.fingerprint`, which covers
the model, the weights, the dataset's contents and the settings of the pass), and is read back only for statistics
of that fingerprint: statistics made again, or made from other inputs, make it be recomputed.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from gated_core.artifacts import PROJECT_TAG, check_provenance, load_artifact, made_from, save_artifact
from gated_core.errors import UserError
from gated_core.neurons import NeuronId
from neuroscope.recompute.examples import Example, Neuron, neuron_folder

EXAMPLES_KIND = "recomputed_examples"  # meta["kind"] of activations.pt
EXAMPLES_FILE = "activations.pt"
MADE_FROM_KEY = "statistics_fingerprint"  # the meta key of what the values were recomputed from
REMEDY = "run b2_recompute.py again"
NEXT_TOKEN_FIELDS = ("next_token", "direct_effect", "next_rank", "ablation_effect")  # of `Example`, kept when present


def examples_path(folder: Path, neuron: Neuron) -> Path:
    """`<neuroscope folder>/L<layer>/N<neuron>/activations.pt`."""
    return neuron_folder(folder, neuron) / EXAMPLES_FILE


def save_examples(folder: Path, neuron: Neuron, examples: list[Example], provenance: dict[str, Any]) -> Path:
    """`activations.pt` of one neuron; `provenance`: what it records of the statistics (`made_from(statistics=...)`,
    and for people the model and a description of the statistics)."""
    if MADE_FROM_KEY not in provenance:
        raise ValueError(f"recomputed values must record the {MADE_FROM_KEY} of their statistics")
    rows = [{**asdict(e), "token_ids": torch.tensor(e.token_ids), "act": torch.tensor(e.act),
             "gate": torch.tensor(e.gate), "lin": torch.tensor(e.lin)} for e in examples]
    path = examples_path(folder, neuron)
    save_artifact({"meta": {"project": PROJECT_TAG, "kind": EXAMPLES_KIND, **provenance}, "layer": neuron[0],
                   "neuron": neuron[1], "examples": rows}, path)
    return path


def load_examples(folder: Path, neuron: Neuron, statistics_fingerprint: str) -> list[Example]:
    """The examples that `save_examples` wrote for `neuron`, refused unless they were recomputed from the statistics
    of `statistics_fingerprint` (and from this neuron: not a file copied from another neuron's folder)."""
    path = examples_path(folder, neuron)
    if not path.exists():
        raise UserError(f"{path}: no recomputed values for neuron {NeuronId(*neuron)}; run b2_recompute.py first")
    data = load_artifact(path, kind=EXAMPLES_KIND, required=("examples", "layer", "neuron"), remedy=REMEDY)
    stored, neuron = NeuronId(data["layer"], data["neuron"]), NeuronId(*neuron)
    if stored != neuron:  # a file copied or moved from another neuron's folder
        raise UserError(f"{path}: holds the recomputed values of neuron {stored}, not {neuron} "
                        f"(copied or moved here); run b2_recompute.py again for neuron {neuron}")
    check_provenance(path, data["meta"], made_from(statistics=statistics_fingerprint), REMEDY, made="recomputed with")
    return [Example(doc=int(r["doc"]), position=int(r["position"]), stored=float(r["stored"]), kind=str(r["kind"]),
                    token_ids=r["token_ids"].tolist(), act=r["act"].tolist(), gate=r["gate"].tolist(), lin=r["lin"].tolist(),
                    **{name: r[name] for name in NEXT_TOKEN_FIELDS if name in r})  # files of older versions have none
            for r in data["examples"]]
