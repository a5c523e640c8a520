"""One run of g_connections.py: check the input, compute every connection list (wcos_casestudies.connections), write
connections.pt, connections.csv and the class x class table and plot. It lives in neuroscope because the expected
contributions read the statistics of the activation pass."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gated_core.errors import UserError
from gated_core.models.sources import ModelSource

CSV_NAME = "connections.csv"
CLASS_STEM = "class_connections"


@dataclass
class ConnectionsRequest:
    """What g_connections.py was asked for."""

    model: str
    settings: Any  # wcos_casestudies.results.Settings
    results_dir: Path
    neurons: list[str]
    neurons_from: Path | None
    top_k: int
    embedding: bool
    datadir: Path | None
    activations: str | None
    loader: str
    device: torch.device
    full_hash: bool = False


def table_neurons(request: ConnectionsRequest, source: ModelSource, results_folder: Path) -> list[tuple[int, int]]:
    """The neurons of connections.csv: --neurons / --neurons_from, else the case-study neurons of casestudies.py
    (case_studies.txt), else none."""
    from neuroscope.recompute import requested_neurons

    if request.neurons or request.neurons_from is not None:
        return requested_neurons(request.neurons, request.neurons_from, source)
    case_studies = results_folder / "case_studies.txt"
    return requested_neurons([], case_studies, source) if case_studies.is_file() and case_studies.read_text().split() else []


def upstream_scale(request: ConnectionsRequest, source: ModelSource, shape: tuple[int, int]) -> tuple[Any, Any]:
    """The mean |a| [layer neuron] of every neuron on the statistics' dataset, and the statistics; (None, None) without
    --datadir."""
    if request.datadir is None:
        if request.activations is not None:
            raise UserError("--activations names a folder inside --datadir: give --datadir too")
        return None, None
    from neuroscope.constants import DEFAULT_ACTIVATIONS
    from neuroscope.histogram import histogram_edges
    from neuroscope.store import load_statistics
    from wcos_casestudies.connections import mean_abs_from_histogram

    stats = load_statistics(source, request.datadir, request.activations or DEFAULT_ACTIVATIONS,
                            hint=" (or leave out --datadir: no expected contributions)")
    if (stats.n_layers, stats.d_mlp) != shape:
        raise UserError(f"the statistics have {stats.n_layers} layers x {stats.d_mlp} neurons, the model {shape[0]} x {shape[1]}")
    if stats.histogram is None:
        raise UserError(f"{request.datadir / (request.activations or DEFAULT_ACTIVATIONS)}: statistics of an older "
                        "b_activations.py without the histogram of a; rerun it with --overwrite")
    return mean_abs_from_histogram(stats.histogram, histogram_edges()), stats


def check_request(request: ConnectionsRequest) -> None:
    """Refuse bad settings before any work."""
    if request.top_k < 1:
        raise UserError(f"--top_k {request.top_k}: give at least 1 entry per list")


def write_class_table(connections: Any, results: Any, folder: Path) -> Any:
    """class_connections.csv/.md and .pdf/.png of the model's IO classes."""
    from gated_core.artifacts import write_table
    from wcos_casestudies.class_connections import BASELINE_SEEDS, class_table, plot_class_table

    table = class_table(connections, results.categories())
    title = (f"Top-{connections.meta['top_k']} inputs by |cosine|, by IO class: mean |cos| and share vs same-layer random "
             f"({BASELINE_SEEDS} seeds)")
    write_table(table.round(4), folder / CLASS_STEM, title=f"{title}: {results.caption}")
    plot_class_table(table, folder / CLASS_STEM, title, results.provenance)
    return table


def run_connections(request: ConnectionsRequest) -> str:
    """Compute and write everything; returns the summary line."""
    from dataclasses import asdict

    from gated_core.artifacts import atomic_write_text
    from gated_core.cli import check_output_location
    from gated_core.models.arch import read_arch
    from gated_core.models.readers import WeightsInfo, open_weights
    from gated_core.models.sources import resolve_model
    from wcos_casestudies.connections import ConnectionInputs, compute_connections
    from wcos_casestudies.connections_store import (
        CONNECTIONS_FILE,
        CONNECTIONS_FOLDER,
        identity_meta,
        load_connections,
        save_connections,
    )
    from wcos_casestudies.results import ModelResults

    check_request(request)
    source = resolve_model(request.model, full_hash=request.full_hash)
    arch = read_arch(source)
    if not arch.gated:
        raise UserError(f"{source.name} has no gate weights: connections into gates need a gated model")
    results = ModelResults(source, request.settings, root=request.results_dir, loader=request.loader)
    folder = results.folder / CONNECTIONS_FOLDER
    check_output_location(folder, "--results_dir")
    neurons = table_neurons(request, source, results.folder)
    scale, stats = upstream_scale(request, source, (arch.n_layers, arch.d_mlp))
    started = time.perf_counter()
    reader = open_weights(source, processing=request.settings.processing, loader=request.loader, device=request.device)
    found = compute_connections(reader, ConnectionInputs(top_k=request.top_k, scale=scale, device=request.device,
                                                         embed=request.embedding, refactor=request.settings.refactor_glu))
    identity = identity_meta(source.weights_fingerprint, request.settings.meta(), request.top_k,
                             None if stats is None else stats.fingerprint)
    meta = {**asdict(WeightsInfo.of(reader)), **request.settings.meta(), **identity, "device": str(request.device),
            "scale": "none" if stats is None else "mean |a| from the histogram of a (bin middles)"}
    path = save_connections(found, folder / CONNECTIONS_FILE, meta)
    connections = load_connections(path, identity)
    computed = time.perf_counter() - started
    if neurons:
        atomic_write_text(folder / CSV_NAME, connections.table(neurons).to_csv(index=False))
    else:  # this run's file has no neurons' lists: an earlier run's csv would describe other lists
        (folder / CSV_NAME).unlink(missing_ok=True)
    write_class_table(connections, results, folder)
    results.write_index()
    return (f"{arch.n_layers * arch.d_mlp:,} neurons, top {request.top_k}: lists in {computed:.1f} s "
            f"(neurons {found.seconds['neurons']:.1f} s, embedding {found.seconds['embedding']:.1f} s) -> {path}"
            f"{f', {CSV_NAME} ({len(neurons)} neurons)' if neurons else ''}, {CLASS_STEM}.csv/.md/.pdf/.png")
