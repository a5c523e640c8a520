"""Runs of the model on inputs of one's own under a plan of ablations (`e_generate.py`: prompts; `e_recall.py`: facts),
checked before the model loads: the model, the sets (e_ablate.py's: classes computed where missing), the statistics
that mean ablation needs, the output folder `RESULTS/<model>/ablation/<kind>/<name>/` (`gated_core.results_layout`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gated_core.artifacts import made_from
from gated_core.cli import check_output_location, parse_device, parse_dtype, plain_name
from gated_core.errors import UserError
from gated_core.models.arch import read_arch
from gated_core.models.loading import load_tokenizer
from gated_core.models.sources import ModelSource, resolve_model
from gated_core.output_folders import RESULTS_ADVICE, check_output_folder
from gated_core.results_layout import ABLATION_FOLDER
from neuroscope.activation_pass.store import load_statistics
from neuroscope.classes.ablation import CONDITIONS, Ablation, parse_condition
from neuroscope.classes.ablation_run import ablation_plan, choose_sets
from neuroscope.classes.neuron_sets import parse_class
from wcos_casestudies.results import ModelResults


@dataclass(frozen=True)
class RunsRequest:
    """What a run under ablations is asked for (`neuroscope.cli.runs_request`: the flags of `add_ablated_runs`)."""

    model: str
    full_hash: bool
    classes: tuple[str, ...]
    roles: tuple[str, ...]
    sample_size: tuple[int, ...]
    seed: int
    mode: str
    conditional: tuple[str, ...] | None  # None: everywhere only; (): also under all four sign combinations
    random_seeds: int
    datadir: Path | None
    activations: str
    settings: Any  # wcos_casestudies.results.Settings
    results_dir: Path
    loader: str
    device: str
    dtype: str


@dataclass(frozen=True)
class AblatedRuns:
    """What a run under ablations needs, checked: the model's source and tokenizer, its results (classes), the output
    folder, what the outputs record they were made from (`meta`), the ablations, the dataset means (mean mode), where
    and in which dtype the model runs."""

    source: ModelSource
    tokenizer: Any
    results: ModelResults
    folder: Path
    meta: dict[str, Any]
    ablations: tuple[Ablation, ...]
    means: torch.Tensor | None
    device: torch.device
    dtype: torch.dtype


def output_name(name: str | None, input_file: Path, flag: str) -> str:
    """The output folder's name: `name` (--name), or the input file's name where it is a plain folder name."""
    if name is not None:
        return name
    try:
        return plain_name(Path(input_file).stem)
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"{flag} {input_file}: its name is no plain folder name ({exc}); give --name") from exc


def prepare_runs(request: RunsRequest, kind: str, folder_kind: str, name: str) -> AblatedRuns:
    """Check every input of a run under e_ablate.py's sets before the model loads; the outputs go to
    `<results>/ablation/<kind>/<name>/`, a folder of `folder_kind` (`gated_core.output_folders`)."""
    for word in request.classes:
        parse_class(word)
    conditions = [] if request.conditional is None else [parse_condition(w) for w in request.conditional] or list(CONDITIONS)
    if request.mode == "mean" and request.datadir is None:
        raise UserError("--mode mean needs the dataset means of b_activations.py: give --datadir (and --activations)")
    device = parse_device(request.device)
    check_output_location(request.results_dir, "--results_dir")
    source = resolve_model(request.model, full_hash=request.full_hash)
    arch = read_arch(source)
    arch.require_gated(source.name, "the IO classes and the ablations need gates")
    stats = load_statistics(source, request.datadir, request.activations) if request.datadir is not None else None
    results = ModelResults(source, request.settings, root=request.results_dir, loader=request.loader, device=device)
    folder = results.folder / ABLATION_FOLDER / kind / name
    for location in (results.folder, folder):
        check_output_location(location, "--results_dir", inside=request.results_dir)
    check_output_folder(folder, folder_kind, advice=RESULTS_ADVICE)
    sets = choose_sets(results, request.classes, request.roles, request.sample_size, request.seed)
    meta = {"model": source.name, "provenance": source.provenance, "mode": request.mode,
            **made_from(weights=results.fingerprint, statistics=stats.fingerprint if stats is not None else None)}
    return AblatedRuns(source, load_tokenizer(source), results, folder, meta,
                       tuple(ablation_plan(sets, arch.d_mlp, request.mode, conditions, request.random_seeds)),
                       stats.mean if stats is not None else None, device, parse_dtype(request.dtype, device))
