"""The steps that the neuroscope page scripts share: check the inputs, recompute the chosen
neurons, keep their values, write their pages. Everything is checked before the model loads.

Under torchrun the viewer's recomputation is split by documents: the batches of the one plan over the union of
the windows' documents are cut into consecutive parts (as the activation pass's shards), each rank recomputes the
examples and windows of its part's documents, and rank 0 puts the filled values back in place: every batch is the
same batch whichever rank runs it, so the values, and the viewer rank 0 writes, are those of one process."""

from __future__ import annotations

import dataclasses
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gated_core.artifacts import made_from
from gated_core.cli import check_no_links, check_output_location, parse_device
from gated_core.errors import UserError
from gated_core.locks import hold_lock
from gated_core.models.loading import load_tokenizer
from gated_core.models.sources import resolve_model
from neuroscope.activation_pass.store import Statistics, load_statistics, statistics_notes
from neuroscope.core.batches import shard_range, subset_plan
from neuroscope.core.distributed import Ranks, gather, together
from neuroscope.recompute.examples import (
    Example,
    Inputs,
    Neuron,
    RecomputeMismatch,
    check_tokenizer,
    checked_dataset,
    load_inputs,
    neuron_folder,
    recompute_examples,
    requested_neurons,
)
from neuroscope.recompute.recomputed import load_examples, save_examples
from neuroscope.view.facts import model_facts
from neuroscope.view.pages import neuroscope_folder, provenance_notes, read_registry, write_pages
from wcos_casestudies.results import ModelResults, Settings


@dataclass(frozen=True)
class PageRun:
    """One run of a page script, checked whole by `open_run` before any work: the model's results, the statistics
    and the neurons asked for. The steps take it and return what they make; nothing is filled in later."""

    results: ModelResults
    stats: Statistics
    neurons: tuple[Neuron, ...]  # (layer, neuron), in the order asked for
    dataset_dir: Path | None  # the dataset to recompute on (None: the statistics' own)
    device: Any
    dataset: Any = None  # loaded and checked by open_run where the run recomputes
    tokenizer: Any = None  # the model's, checked by open_run against the statistics' (None: loaded when needed)

    @property
    def folder(self) -> Path:
        return neuroscope_folder(self.results)

    @property
    def identity(self) -> dict[str, Any]:
        """What recomputed values record of the statistics they came from: their fingerprint (the one key that is
        checked; it covers the model, weights, dataset and settings), and for people the model and a description."""
        meta = self.stats.meta
        return {"model": meta.model, "statistics": f"{meta.dataset} · {meta.tokens} tokens · k {meta.k} · {meta.dtype}",
                **made_from(statistics=self.stats.fingerprint)}


@dataclass(frozen=True)
class Recomputed:
    """What the recomputation of a page run gives the steps after it: every chosen neuron's examples, and the name of
    the dataset they come from (as the pages show it)."""

    examples: dict[Neuron, list[Example]]
    dataset_name: str


@dataclass(frozen=True)
class PageRequest:
    """What a page script asks for: the model, the statistics and neurons, the weight settings, where results go."""

    model: str
    datadir: Path
    activations: str  # the statistics folder inside datadir
    neurons: list[str]  # LAYER.NEURON names, LAYER.*, or `all`
    neurons_from: Path | None
    settings: Settings
    results_dir: Path
    loader: str = "auto"
    device: str = "auto"
    dataset: str | None = None  # the dataset inside datadir (None: the statistics' own)
    whole_layers: bool = False
    full_hash: bool = False


def open_run(request: PageRequest, recomputes: bool = True) -> PageRun:
    """Check the model, the neurons, the statistics, the output folder and (where the run `recomputes`) the dataset,
    before any work and before anything is written (the model is not loaded yet)."""
    device = parse_device(request.device)
    check_output_location(request.results_dir, "--results_dir")
    source = resolve_model(request.model, full_hash=request.full_hash)
    neurons = requested_neurons(request.neurons, request.neurons_from, source, request.whole_layers)
    stats = load_statistics(source, request.datadir, request.activations)
    results = ModelResults(source, request.settings, root=request.results_dir, loader=request.loader, device=device)
    check_output_location(neuroscope_folder(results), "--results_dir", inside=request.results_dir)
    check_page_folders(neuroscope_folder(results), neurons, request.results_dir)
    read_registry(neuroscope_folder(results))  # a damaged page index stops the run now, not after the work
    dataset_dir = request.datadir / request.dataset if request.dataset else None
    tokenizer, dataset = load_tokenizer(source), None
    if recomputes:
        dataset, dataset_dir = checked_dataset(stats, dataset_dir, tokenizer, source)
    else:
        check_tokenizer(tokenizer, stats.meta, None, source)
    return PageRun(results, stats, tuple(neurons), dataset_dir, device, dataset=dataset, tokenizer=tokenizer)


def write_statistics_only(run: PageRun) -> Path:
    """--statistics_only: the pages of what the statistics hold, without the model's weights
    (`statistics_pages.write_statistics_pages`) in the neuroscope folder's STATISTICS_ONLY_FOLDER; returns its index."""
    from gated_core.results_layout import STATISTICS_ONLY_FOLDER
    from neuroscope.view.statistics_pages import write_statistics_pages

    dataset, dataset_dir = checked_dataset(run.stats, run.dataset_dir)
    folder = run.folder / STATISTICS_ONLY_FOLDER
    with hold_lock(folder):
        return write_statistics_pages(run.stats, dataset, Path(dataset_dir).name, run.tokenizer, list(run.neurons), folder,
                                      run.results.source.name)


def check_page_folders(pages: Path, neurons: list[Neuron], results_dir: Path) -> None:
    """Refuse a page folder (L<layer>, L<layer>/N<neuron>) of these neurons that is a symbolic link: a page run would
    write through it into a folder of someone else's (one listing per layer, not a look-up per neuron)."""
    chosen = set(neurons)
    for layer in sorted({layer for layer, _ in neurons}):
        folder = neuron_folder(pages, (layer, 0)).parent
        check_no_links(folder, "--results_dir", results_dir)
        entries = folder.iterdir() if folder.is_dir() else ()
        for entry in (entry for entry in entries if entry.is_symlink() and entry.name[1:].isdigit()):
            if (layer, int(entry.name[1:])) in chosen:
                check_no_links(entry, "--results_dir", results_dir)


def hold_pages(run: PageRun) -> AbstractContextManager[Path]:
    """The lock of the model's neuroscope folder: its pages, their index and its viewers, held while a run writes
    any of them (one writer at a time; take it once per run: a second take in the same process is refused)."""
    return hold_lock(run.folder / "neurons.json")


def checked_viewer_folder(run: PageRun, name: str) -> Path:
    """The folder of the viewer `name`, refused before any work unless it is free or a viewer this tool wrote."""
    from neuroscope.view.viewer_folder import check_viewer_target

    folder = run.folder / name
    check_viewer_target(folder)
    return folder


def viewer_identity(run: PageRun) -> dict[str, Any]:
    """What the meta of a viewer of this run must hold to be copied by --from_viewer: its model and sizes, and the
    fingerprint of the statistics it was made from."""
    return {"model": run.results.source.name, "n_layers": run.stats.n_layers, "d_mlp": run.stats.d_mlp,
            **made_from(statistics=run.stats.fingerprint)}


def run_inputs(run: PageRun) -> Inputs:
    """The model (loaded now), the dataset and the tokenizer that the run recomputes with."""
    return load_inputs(run.results.source, run.stats, run.dataset_dir, run.device, dataset=run.dataset, tokenizer=run.tokenizer)


def with_positions(run: PageRun, inputs: Inputs, batch_size: int) -> PageRun:
    """The run with its statistics' unknown example positions (statistics imported from a published summary) found
    again for the chosen neurons (`neuroscope.recompute.locate`); the same run where none is unknown."""
    from neuroscope.recompute.locate import located

    stats = located(run.stats, inputs.model, inputs.dataset, run.neurons, batch_size, inputs.pad_id, run.device)
    return run if stats is run.stats else dataclasses.replace(run, stats=stats)


def recompute_checked(run: PageRun, batch_size: int, ablation_effect: bool = False) -> Recomputed:
    """Load the model and dataset, recompute every chosen neuron and check it against the statistics; with
    `ablation_effect`, also each example's next-token loss change with only its neuron zeroed there."""
    inputs = run_inputs(run)
    run = with_positions(run, inputs, batch_size)
    try:
        examples = recompute_examples(inputs.model, inputs.dataset, run.stats, run.neurons, batch_size, inputs.pad_id,
                                      run.device)
    except RecomputeMismatch as exc:
        raise UserError(f"recomputation does not match the statistics: {exc}") from exc
    if ablation_effect:
        add_ablation_effects(inputs, examples, batch_size)
    return Recomputed(examples, inputs.dataset_name)


def add_ablation_effects(inputs: Inputs, examples: dict[Neuron, list[Example]], batch_size: int) -> None:
    """Each example's `ablation_effect` (`neuroscope.recompute.next_token.ablation_effects`), batched over all of them."""
    from neuroscope.recompute.next_token import Firing, ablation_effects

    rows = [row for rows in examples.values() for row in rows]
    firings = [Firing(layer, neuron, row.doc, row.position) for (layer, neuron), rows in examples.items() for row in rows]
    values = ablation_effects(inputs.model, inputs.dataset, firings, batch_size, inputs.pad_id, inputs.device)
    for row, value in zip(rows, values.tolist()):
        row.ablation_effect = None if row.next_token < 0 else value


def save_recomputed(run: PageRun, recomputed: Recomputed) -> list[Path]:
    """`activations.pt` of every neuron, beside its page."""
    return [save_examples(run.folder, neuron, rows, run.identity) for neuron, rows in recomputed.examples.items()]


def load_recomputed(run: PageRun) -> Recomputed:
    """The values `save_recomputed` kept, for every chosen neuron (the dataset named as the statistics name it)."""
    examples = {neuron: load_examples(run.folder, neuron, run.stats.fingerprint) for neuron in run.neurons}
    return Recomputed(examples, Path(run.stats.meta.dataset).name)


def write_run_pages(run: PageRun, recomputed: Recomputed, top_tokens: int) -> list[Path]:
    """The pages of the chosen neurons and the index."""
    tokenizer = run.tokenizer if run.tokenizer is not None else load_tokenizer(run.results.source)
    facts = model_facts(run.results, run.stats.fingerprint)
    return write_pages(run.results, run.stats, facts, recomputed.dataset_name, recomputed.examples, tokenizer, top_tokens)




@dataclass(frozen=True)
class ViewerSettings:
    """How the compact viewer is made: its folder name, windows, context and token tables."""

    name: str
    before: int  # coloured tokens before the extreme one
    width: int  # coloured tokens in all (before, the extreme one, after)
    context: tuple[int, int]  # grey tokens before and after the coloured window
    top_tokens: int  # promoted and suppressed tokens
    table_tokens: int  # tokens of each of ±w_in, ±w_gate
    compact: bool = False  # activations in 8 bits, the examples' values in float16 (`neuron_view.example_payload`)


@dataclass(frozen=True)
class RecomputedWindows:
    """The chosen neurons' example windows, recomputed and checked (`recompute_all_windows`): the examples by layer
    (`windows.LayerExamples`; whole on rank 0 only), the dataset's tokens [token] and document starts [document + 1],
    what the recomputation ran with, and its time."""

    examples: dict[int, Any]
    tokens: np.ndarray
    doc_starts: np.ndarray
    inputs: Inputs
    seconds: float
    stats: Statistics  # the run's, with the examples' positions where they were unknown (`with_positions`)


@dataclass(frozen=True)
class WrittenViewer:
    """A viewer `write_run_viewer` wrote: its folder, its size in bytes, and each step's time (recompute, weights,
    write) in seconds."""

    folder: Path
    size: int
    seconds: dict[str, float]


EXAMPLE_FIELDS = ("column", "kind", "rank", "doc", "position", "stored")  # LayerExamples' [example] inputs
WINDOW_FIELDS = ("window_column", "window_doc", "window_start", "window_length")  # its [window] inputs
FILLED_EXAMPLE_FIELDS = ("next_token", "direct_effect")  # [example] values the recomputation fills per batch
FILLED_WINDOW_FIELDS = ("acts", "gates", "lins")  # [window width] values it fills (gates, lins: where shown)


def documents_of_rank(examples: dict[int, Any], lengths: np.ndarray, batch_size: int, ranks: Ranks) -> np.ndarray:
    """The documents of this rank's consecutive batches of the plan that `windows.recompute_windows` makes of the
    union of the windows' documents; given to it alone, they make the very same batches."""
    docs = np.unique(np.concatenate([ex.window_doc for ex in examples.values()]))
    plan = subset_plan(docs.tolist(), lengths[docs].tolist(), batch_size)
    first, last = shard_range(len(plan), ranks.world, ranks.rank)
    return np.asarray(sorted(doc for batch in plan[first:last] for doc in batch), dtype=np.int64)


def windows_part(examples: Any, docs: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    """The examples and windows of one layer (`windows.LayerExamples`) in the documents `docs` only; returns the part
    and the rows of the whole that its examples and windows are."""
    example_rows = np.nonzero(np.isin(examples.doc, docs))[0]
    window_rows = np.nonzero(np.isin(examples.window_doc, docs))[0]
    renumbered = np.full(len(examples.window_doc), -1, dtype=np.int64)
    renumbered[window_rows] = np.arange(len(window_rows))
    filled = {name: getattr(examples, name)[window_rows].copy() for name in FILLED_WINDOW_FIELDS
              if getattr(examples, name) is not None}
    part = dataclasses.replace(examples, **{name: getattr(examples, name)[example_rows] for name in EXAMPLE_FIELDS},
                               **{name: getattr(examples, name)[window_rows] for name in WINDOW_FIELDS}, **filled,
                               window=renumbered[examples.window[example_rows]], bos_value=examples.bos_value.copy())
    return part, example_rows, window_rows


def filled_values(part: Any) -> dict[str, Any]:
    """What the recomputation filled in a part (picklable, for rank 0)."""
    return {name: getattr(part, name) for name in (*FILLED_EXAMPLE_FIELDS, *FILLED_WINDOW_FIELDS, "bos_value")}


def put_back(examples: Any, parts: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]]) -> None:
    """Fill one layer's examples from the ranks' parts (example rows, window rows, `filled_values`), in rank order;
    a document's BOS value is the first rank's that saw one, as the first batch with a BOS gives it in one process."""
    for name in FILLED_EXAMPLE_FIELDS:
        if getattr(examples, name) is None:
            setattr(examples, name, np.empty(len(examples.doc), dtype=parts[0][2][name].dtype))
    for example_rows, window_rows, values in parts:
        for name in FILLED_EXAMPLE_FIELDS:
            getattr(examples, name)[example_rows] = values[name]
        for name in FILLED_WINDOW_FIELDS:
            if values[name] is not None:
                getattr(examples, name)[window_rows] = values[name]
        if np.isnan(examples.bos_value).any() and not np.isnan(values["bos_value"]).any():
            examples.bos_value = values["bos_value"]


def recompute_checked_windows(run: PageRun, inputs: Inputs, examples: dict[int, Any], lengths: np.ndarray,
                              batch_size: int, progress: Any, rank_next_tokens: bool = True) -> None:
    """`windows.recompute_windows`, a mismatch with the statistics being a UserError."""
    from neuroscope.recompute.windows import recompute_windows

    try:
        recompute_windows(inputs.model, inputs.dataset, examples, lengths, batch_size, inputs.pad_id, run.device,
                          run.stats.meta.dtype, run.stats.meta.first_token(inputs.tokenizer.bos_token_id), progress,
                          rank_next_tokens)
    except RecomputeMismatch as exc:
        raise UserError(f"recomputation does not match the statistics: {exc}") from exc


def recompute_by_ranks(run: PageRun, inputs: Inputs, examples: dict[int, Any], lengths: np.ndarray, batch_size: int,
                       ranks: Ranks, progress: Any) -> None:
    """`recompute_checked_windows` of this rank's documents; rank 0 gets every rank's values put in place, and
    ranks the next tokens of all of them at once (as one process does: the same scores, made in the same chunks)."""
    from neuroscope.recompute.next_token import Readout, next_token_ranks

    if not ranks.several:
        recompute_checked_windows(run, inputs, examples, lengths, batch_size, progress)
        return
    docs = documents_of_rank(examples, lengths, batch_size, ranks)
    parts = {layer: windows_part(ex, docs) for layer, ex in examples.items()}
    together(ranks, lambda: recompute_checked_windows(run, inputs, {layer: part for layer, (part, _, _) in parts.items()},
                                                      lengths, batch_size, progress, rank_next_tokens=False))
    gathered = gather(ranks, {layer: (rows, windows, filled_values(part)) for layer, (part, rows, windows) in parts.items()})
    if gathered is None:
        return
    readout = Readout.of(inputs.model)
    for layer, ex in examples.items():
        put_back(ex, [by_layer[layer] for by_layer in gathered])
        ex.next_rank = next_token_ranks(readout, inputs.model, layer, ex.neurons[ex.column], ex.next_token)


def recompute_all_windows(run: PageRun, settings: ViewerSettings, batch_size: int,
                          ranks: Ranks | None = None) -> RecomputedWindows:
    """One batched pass over the union of the chosen neurons' documents: their example windows, checked
    against the statistics. Under torchrun (`ranks`) each rank runs its part of the documents and only rank 0's
    examples are whole."""
    from neuroscope.recompute.windows import dataset_tokens, layer_examples

    ranks = ranks or Ranks()
    inputs = run_inputs(run)
    run = with_positions(run, inputs, batch_size)
    tokens, doc_starts = dataset_tokens(inputs.dataset)
    lengths = np.diff(doc_starts)
    by_layer: dict[int, list[int]] = {}
    for layer, neuron in run.neurons:
        by_layer.setdefault(layer, []).append(neuron)
    examples = {layer: layer_examples(run.stats, layer, np.asarray(neurons), lengths, settings.before, settings.width)
                for layer, neurons in by_layer.items()}
    docs = len(documents_of_rank(examples, lengths, batch_size, ranks))
    started = time.perf_counter()
    with tqdm(total=-(-docs // batch_size), desc="recompute (all layers at once)", unit="batch") as progress:
        recompute_by_ranks(run, inputs, examples, lengths, batch_size, ranks, progress)
    return RecomputedWindows(examples, tokens, doc_starts, inputs, time.perf_counter() - started, run.stats)


def write_run_viewer(run: PageRun, settings: ViewerSettings, batch_size: int,
                     ranks: Ranks | None = None) -> WrittenViewer | None:
    """Recompute the chosen neurons' windows, compute what their weights do, and write the viewer (in place of
    the viewer of that name, if any: call only while holding the pages lock).
    Under torchrun (`ranks`) every rank recomputes its part and rank 0 writes (the others get None)."""
    from gated_core.models.readers import open_weights
    from neuroscope.view.facts import layer_logit_effects
    from neuroscope.view.neuron_view import Documents, ViewRun, layer_moments, token_texts
    from neuroscope.view.viewer import write_viewer

    recomputed = recompute_all_windows(run, settings, batch_size, ranks)
    if ranks is not None and not ranks.first:
        return None
    run = dataclasses.replace(run, stats=recomputed.stats)
    examples, tokens, doc_starts, inputs = recomputed.examples, recomputed.tokens, recomputed.doc_starts, recomputed.inputs
    seconds = {"recompute": recomputed.seconds}
    started = time.perf_counter()
    results = run.results
    facts = model_facts(results, run.stats.fingerprint)
    reader = open_weights(results.source, processing=results.settings.processing, loader=results.loader)
    w_u = reader.unembed()
    effects = {layer: layer_logit_effects(results, reader, w_u, layer, torch.from_numpy(ex.neurons), settings.top_tokens,
                                          settings.table_tokens, moments=not facts.moments)
               for layer, ex in tqdm(sorted(examples.items()), desc="weights · W_U", unit="layer")}
    by_layer = {layer: layer_moments(facts, effects[layer], layer, ex.neurons) for layer, ex in examples.items()}
    moments = {name: {layer: values[name] for layer, values in by_layer.items()} for name in ("kurtosis", "skew")}
    seconds["weights"] = time.perf_counter() - started
    started = time.perf_counter()
    tokenizer = inputs.tokenizer
    vocab = token_texts(tokenizer, list(range(max(len(tokenizer), w_u.shape[1]))))
    folder = run.folder / settings.name
    longest = int(np.diff(doc_starts).max(initial=0))
    context = (min(settings.context[0], longest), min(settings.context[1], longest))  # more grey tokens than a document has: none
    viewer = ViewRun(folder, results.source.name, inputs.dataset_name, run.stats, facts,
                     {layer: ex.neurons for layer, ex in examples.items()}, vocab, Documents(tokens, doc_starts), context,
                     [*provenance_notes(results), *statistics_notes(run.stats.meta), *facts.notes], compact=settings.compact)
    size = write_viewer(viewer, examples, effects, moments)
    seconds["write"] = time.perf_counter() - started
    return WrittenViewer(folder, size, seconds)
