"""One run of g_connections.py: check the input, compute every connection list (wcos_casestudies.connections), write
connections.pt, connections.csv and the class x class table and plot. It lives in neuroscope because the expected
contributions read the statistics of the activation pass."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gated_core.errors import UserError
from gated_core.models.sources import ModelSource

CSV_NAME = "connections.csv"
CLASS_STEM = "class_connections"
BYTES_PER_ENTRY = 16  # a list entry while it runs: the other neuron (int64), virtual weight and score (float32)
CONNECTIONS_KIND_OF_FOLDER = "connections"  # the kind in the folder's marker (gated_core.output_folders)
LEGACY_NAMES = r"connections\.(pt|csv)|class_connections\.(csv|md|pdf|png)"  # what earlier versions wrote
MERGE_ROOM = 3  # a merge holds the lists of a block of layers twice more (the candidates joined, then gathered)


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
    from neuroscope.recompute.examples import requested_neurons
    from wcos_casestudies.section6 import CASE_STUDIES_NAMES

    if request.neurons or request.neurons_from is not None:
        return requested_neurons(request.neurons, request.neurons_from, source)
    case_studies = results_folder / CASE_STUDIES_NAMES
    return requested_neurons([], case_studies, source) if case_studies.is_file() and case_studies.read_text().split() else []


def upstream_scale(request: ConnectionsRequest, source: ModelSource, shape: tuple[int, int]) -> tuple[Any, Any]:
    """The mean |a| [layer neuron] of every neuron on the statistics' dataset, and the statistics; (None, None) without
    --datadir."""
    if request.datadir is None:
        if request.activations is not None:
            raise UserError("--activations names a folder inside --datadir: give --datadir too")
        return None, None
    from neuroscope.activation_pass.store import load_statistics
    from neuroscope.constants import DEFAULT_ACTIVATIONS
    from neuroscope.core.histogram import histogram_edges
    from wcos_casestudies.connections import mean_abs_from_histogram

    stats = load_statistics(source, request.datadir, request.activations or DEFAULT_ACTIVATIONS,
                            hint=" (or leave out --datadir: no expected contributions)")
    if (stats.n_layers, stats.d_mlp) != shape:
        raise UserError(f"the statistics have {stats.n_layers} layers x {stats.d_mlp} neurons, the model {shape[0]} x {shape[1]}")
    if stats.histogram is None:
        raise UserError(f"{request.datadir / (request.activations or DEFAULT_ACTIVATIONS)}: statistics of an older "
                        "b_activations.py without the histogram of a; rerun it with --overwrite")
    return mean_abs_from_histogram(stats.histogram, histogram_edges()), stats


def list_slots(arch: Any, embedding: bool, with_scale: bool) -> int:
    """How many entries one unit of --top_k adds over every list of every neuron (kinds x rankings x neurons)."""
    from wcos_casestudies.connections import EMBED_KINDS, KINDS, rankings_of

    kinds = [kind for kind in KINDS if embedding or kind not in EMBED_KINDS]
    return sum(len(rankings_of(kind, with_scale)) for kind in kinds) * arch.n_layers * arch.d_mlp


def memory_bytes(device: torch.device) -> int:
    """The memory the lists may take: the GPU's for --device cuda, else the machine's physical memory."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_request(request: ConnectionsRequest, arch: Any) -> None:
    """Refuse bad settings before any work: --top_k of at least 1, at most the longest list there is (the neurons of
    the other layers, or the vocabulary for the embedding's lists), and lists that fit in memory (with the room their
    merges take)."""
    if request.top_k < 1:
        raise UserError(f"--top_k {request.top_k}: give at least 1 entry per list")
    longest = max((arch.n_layers - 1) * arch.d_mlp, arch.vocab_size if request.embedding else 0, 1)
    if request.top_k > longest:
        raise UserError(f"--top_k {request.top_k}: no list can be that long; the longest holds {longest:,} entries "
                        f"({'the vocabulary' if longest == arch.vocab_size else 'the neurons of the other layers'})")
    per_k = list_slots(arch, request.embedding, request.datadir is not None) * BYTES_PER_ENTRY * MERGE_ROOM
    available = memory_bytes(request.device)
    if request.top_k * per_k > available:
        raise UserError(f"--top_k {request.top_k}: the lists would take about {request.top_k * per_k / 2**20:,.0f} MiB, more "
                        f"than the {available / 2**20:,.0f} MiB of {request.device.type.upper()} memory here; at most "
                        f"--top_k {max(1, available // per_k):,} fits")


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


@dataclass(frozen=True)
class ConnectionsRun:
    """A checked request: the model, its results folder, the output folder and the table's neurons."""

    request: ConnectionsRequest
    source: ModelSource
    arch: Any
    results: Any  # wcos_casestudies.results.ModelResults
    folder: Path  # RESULTS/<model>/<settings>/connections
    neurons: list[tuple[int, int]]


def open_connections(request: ConnectionsRequest) -> ConnectionsRun:
    """Check the model, the settings and the output folder before any work (nothing is read but the config)."""
    from gated_core.cli import check_output_location
    from gated_core.models.arch import read_arch
    from gated_core.models.sources import resolve_model
    from gated_core.output_folders import RESULTS_ADVICE, check_output_folder, legacy_pattern
    from gated_core.results_layout import CONNECTIONS_FOLDER
    from wcos_casestudies.results import ModelResults

    source = resolve_model(request.model, full_hash=request.full_hash)
    arch = read_arch(source)
    if not arch.gated:
        raise UserError(f"{source.name} has no gate weights: connections into gates need a gated model")
    check_request(request, arch)
    results = ModelResults(source, request.settings, root=request.results_dir, loader=request.loader)
    folder = results.folder / CONNECTIONS_FOLDER
    check_output_location(folder, "--results_dir", inside=request.results_dir)
    check_output_folder(folder, CONNECTIONS_KIND_OF_FOLDER, legacy_pattern(LEGACY_NAMES), RESULTS_ADVICE)
    return ConnectionsRun(request, source, arch, results, folder, table_neurons(request, source, results.folder))


def run_connections(request: ConnectionsRequest) -> str:
    """Compute and write everything, one run at a time (the folder's lock); returns the summary line."""
    from gated_core.locks import hold_lock

    run = open_connections(request)
    with hold_lock(run.folder):  # a second run stops here, naming this one
        return compute_and_write(run)


def compute_and_write(run: ConnectionsRun) -> str:
    """The lists of every neuron, written with the csv and the class table as one folder (a kill leaves the old
    folder or the new one); returns the summary line."""
    from dataclasses import asdict

    from gated_core.artifacts import atomic_write_text
    from gated_core.models.readers import WeightsInfo, open_weights
    from gated_core.output_folders import RESULTS_ADVICE, legacy_pattern, rewrite_folder
    from wcos_casestudies.connections import ConnectionInputs, compute_connections
    from wcos_casestudies.connections_store import CONNECTIONS_FILE, identity_meta, load_connections, save_connections

    request, source = run.request, run.source
    scale, stats = upstream_scale(request, source, (run.arch.n_layers, run.arch.d_mlp))
    started = time.perf_counter()
    reader = open_weights(source, processing=request.settings.processing, loader=request.loader, device=request.device)
    found = compute_connections(reader, ConnectionInputs(top_k=request.top_k, scale=scale, device=request.device,
                                                         embed=request.embedding, refactor=request.settings.refactor_glu))
    identity = identity_meta(source.weights_fingerprint, request.settings.meta(), request.top_k,
                             None if stats is None else stats.fingerprint)
    meta = {**asdict(WeightsInfo.of(reader)), **request.settings.meta(), **identity, "device": str(request.device),
            "scale": "none" if stats is None else "mean |a| from the histogram of a (bin middles)"}
    legacy = legacy_pattern(LEGACY_NAMES)
    with rewrite_folder(run.folder, CONNECTIONS_KIND_OF_FOLDER, {"model": source.name}, legacy, RESULTS_ADVICE) as staging:
        connections = load_connections(save_connections(found, staging / CONNECTIONS_FILE, meta), identity)
        computed = time.perf_counter() - started
        if run.neurons:  # without neurons, no csv: an earlier run's would describe other lists
            atomic_write_text(staging / CSV_NAME, connections.table(run.neurons).to_csv(index=False))
        write_class_table(connections, run.results, staging)
    run.results.write_index()
    return (f"{run.arch.n_layers * run.arch.d_mlp:,} neurons, top {request.top_k}: lists in {computed:.1f} s "
            f"(neurons {found.seconds['neurons']:.1f} s, embedding {found.seconds['embedding']:.1f} s) -> "
            f"{run.folder / CONNECTIONS_FILE}{f', {CSV_NAME} ({len(run.neurons)} neurons)' if run.neurons else ''}, "
            f"{CLASS_STEM}.csv/.md/.pdf/.png")
