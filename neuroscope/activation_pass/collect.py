"""The activation pass: the loop over the batches (`run_pass`) and the runs the scripts make of it: settings and
shards, checkpoints and resumption, merging shard files, and the ranks of one torchrun command, whose rank 0
merges their shards into stats.pt once every rank has written its own (`pass_by_ranks`)."""

from __future__ import annotations

import re
import resource
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from gated_core.artifacts import made_from, package_versions, remove_stale_temporaries
from gated_core.cli import check_output_location, int_from_environment, parse_device, parse_dtype
from gated_core.errors import UserError
from gated_core.locks import hold_lock
from gated_core.models.arch import read_arch
from gated_core.models.loading import load_hf_model, load_tokenizer
from gated_core.models.sources import resolve_model
from gated_core.neurons import NeuronId
from neuroscope.activation_pass.activations import STATISTICS_VERSION, NeuronStats
from neuroscope.activation_pass.reducer import BatchReducer
from neuroscope.activation_pass.store import START_AGAIN, check_run, load_stats, pass_identity, peek_stats_meta, save_stats, stats_path
from neuroscope.core.batches import batch_plan, padded_batches, shard_range
from neuroscope.core.distributed import Ranks, all_gather, broadcast, check_same, rank_device, together
from neuroscope.core.hooks import check_activation_signs, decoder_layers, mlp_hooks, run_model
from neuroscope.data.dataset_store import META_FILE, check_vocabulary, document_lengths, is_dataset_folder, load_tokenized

NONFINITE_SHOWN = 5  # neurons named in the line on non-finite activations at the end of a pass
SHARD_FILE = re.compile(r"stats\.shard(\d+)of(\d+)(\.partial)?\.pt")  # `stats_path`'s names of shard files


def shard_settings(num_shards: int | None, shard_index: int | None) -> tuple[int, int]:
    """--num_shards/--shard_index (None: not given), falling back to torchrun's WORLD_SIZE/RANK."""
    num = num_shards if num_shards is not None else int_from_environment("WORLD_SIZE", 1, minimum=1)
    index = shard_index if shard_index is not None else int_from_environment("RANK", 0, minimum=0)
    if num < 1 or not 0 <= index < num:
        names = (f"{'--shard_index' if shard_index is not None else 'RANK'} {index}, "
                 f"{'--num_shards' if num_shards is not None else 'WORLD_SIZE'} {num}")
        raise UserError(f"{names}: need 0 <= shard index < number of shards")
    return num, index


def current_dataset_fingerprint(meta: dict[str, Any]) -> str | None:
    """The fingerprint of the dataset that statistics name, as it is on disk now (None where it is gone)."""
    folder = Path(str(meta.get("dataset", "")))
    if not (folder / META_FILE).is_file():
        return None
    return load_tokenized(folder)[1]["fingerprint"]


def load_shard(folder: Path, num_shards: int, index: int, expect: dict[str, Any] | None) -> tuple[NeuronStats, dict[str, Any]]:
    """One finished shard file, checked against the run's identity `expect` (None: the first shard sets it)."""
    path = stats_path(folder, num_shards, index)
    if not path.exists():
        partial = stats_path(folder, num_shards, index, partial=True)
        state = "is still running or was interrupted" if partial.exists() else "is missing"
        raise UserError(f"shards do not add up: {path.name} {state}")
    remedy = f"rerun shard {index} (--num_shards {num_shards} --shard_index {index}) with --overwrite"
    stats, meta, _ = load_stats(path, remedy=remedy)
    if expect is None:
        expect = {**pass_identity(meta), **made_from(dataset=current_dataset_fingerprint(meta) or meta.get("dataset_fingerprint"))}
    check_run(path, meta, expect, remedy)
    return stats, meta


def nonfinite_line(stats: NeuronStats, dtype: str) -> str | None:
    """The line that ends a pass in which some neuron's a, g or u was not finite at some tokens: how many neurons,
    the first few (layer.neuron) and what to do; None when every value was finite."""
    hit = (stats.nonfinite > 0).nonzero().tolist()
    if not hit:
        return None
    named = ", ".join(NeuronId(layer, neuron).name for layer, neuron in hit[:NONFINITE_SHOWN]) + (", ..." if len(hit) > NONFINITE_SHOWN else "")
    hint = ("float16 overflows above 65,504: run it in float32 or bfloat16 (--dtype)" if dtype == "float16"
            else f"the model overflows in {dtype}: check its weights, or run it in float32 (--dtype)")
    return (f"warning: {len(hit):,} of {stats.nonfinite.numel():,} neurons ({named}) had a non-finite a, g or u (inf or NaN) "
            f"at some tokens (up to {int(stats.nonfinite.max()):,} of {int(stats.n_tokens):,}): those tokens are left out of "
            f"the neuron's mean, frequencies, histogram and examples, and counted (nonfinite); {hint}")


def report_nonfinite(stats: NeuronStats, dtype: str) -> None:
    """Print `nonfinite_line` to stderr, where there is one."""
    line = nonfinite_line(stats, dtype)
    if line is not None:
        print(line, file=sys.stderr)


def other_split_files(folder: Path, num_shards: int) -> dict[tuple[int, int], list[Path]]:
    """The shard files and checkpoints in `folder` of splits into another number of shards than `num_shards`, by
    (number of shards, shard index): plain files named exactly as `stats_path` names them."""
    found: dict[tuple[int, int], list[Path]] = {}
    for path in sorted(Path(folder).glob("stats.shard*of*.pt")):
        match = SHARD_FILE.fullmatch(path.name)
        if match is None or path.is_symlink() or not path.is_file():
            continue
        shards, index = int(match[2]), int(match[1])
        if shards != num_shards and path == stats_path(folder, shards, index, partial=match[3] is not None):
            found.setdefault((shards, index), []).append(path)
    return found


def superseded(path: Path, meta: dict[str, Any], shards: int, index: int) -> bool:
    """Whether `path` is a shard file or checkpoint that this tool wrote of the run whose statistics `meta` are (the
    same model, weights, dataset and settings), as shard `index` of `shards`: the final statistics hold its part."""
    stored = peek_stats_meta(path)
    return (stored is not None and stored.get("num_shards") == shards and stored.get("shard_index") == index
            and pass_identity(stored) == pass_identity(meta))


def retire_other_splits(folder: Path, meta: dict[str, Any], num_shards: int) -> tuple[list[Path], list[Path]]:
    """Once stats.pt (`meta`) is written: remove the shard files and checkpoints of `folder` of other splits (another
    number of shards than `num_shards`, e.g. of a torchrun killed with another world size) that it supersedes, each
    shard under its lock, with one note naming them; name the others (another run's, not this tool's, or a shard
    still running) in a note with the command that removes them. Returns (removed, kept)."""
    removed: list[Path] = []
    kept: list[Path] = []
    for (shards, index), paths in other_split_files(folder, num_shards).items():
        try:
            with hold_lock(stats_path(folder, shards, index)):
                for partial in (False, True):  # what a killed write of the shard left beside it
                    remove_stale_temporaries(stats_path(folder, shards, index, partial=partial))
                for path in paths:
                    if superseded(path, meta, shards, index):
                        path.unlink()
                        removed.append(path)
                    else:
                        kept.append(path)
        except UserError:  # a run of that shard holds its lock: leave its files
            kept.extend(paths)
    if removed:
        print(f"note: removed {len(removed)} file(s) of this run split into another number of shards (stats.pt now holds "
              f"their statistics): {', '.join(path.name for path in removed)}", file=sys.stderr)
    if kept:
        print(f"note: {len(kept)} shard file(s) of another split left in {folder} (not of this run, or in use): "
              f"{', '.join(path.name for path in kept)}; to remove them: rm {' '.join(shlex.quote(str(p)) for p in kept)}",
              file=sys.stderr)
    return removed, kept


def merge_shards(folder: Path, num_shards: int) -> Path:
    """Merge shard files in order into stats.pt; they must be of one run (model, weights, dataset and its
    contents, settings) and tile the dataset's batches exactly."""
    if num_shards < 2:
        raise UserError("--merge needs --num_shards 2 or more")
    merged, first_meta, expected_batch = None, None, 0
    for index in range(num_shards):
        expect = None if first_meta is None else pass_identity(first_meta)
        stats, meta = load_shard(folder, num_shards, index, expect)
        if meta.get("num_shards") != num_shards or meta.get("first_batch") != expected_batch:
            raise UserError(f"shards do not add up: {stats_path(folder, num_shards, index).name} covers batches "
                            f"{meta.get('first_batch')}..{meta.get('last_batch')}, expected to start at {expected_batch} "
                            f"of a {num_shards}-way split")
        expected_batch = meta["last_batch"]
        first_meta = first_meta or meta
        if merged is None:
            merged = stats
        else:
            merged.merge(stats)
    n_batches = first_meta["batches"]
    if expected_batch != n_batches:
        raise UserError(f"shards do not add up: they cover {expected_batch} of {n_batches} batches")
    meta = {**first_meta, "num_shards": 1, "shard_index": 0, "first_batch": 0, "last_batch": n_batches,
            "merged_from": num_shards}
    path = stats_path(folder)
    save_stats(merged, meta, path)
    report_nonfinite(merged, meta["dtype"])
    retire_other_splits(folder, meta, num_shards)
    return path


@dataclass(frozen=True)
class PassRequest:
    """What a run of the activation pass asks for: the model, the dataset and where its statistics go, and how."""

    model: str
    datadir: Path
    dataset: str  # the tokenized dataset inside datadir
    save_to: str  # the statistics folder inside datadir
    examples_per_neuron: int
    batch_size: int
    device: str = "auto"
    dtype: str = "auto"
    include_bos: bool = False
    num_shards: int | None = None  # None: torchrun's WORLD_SIZE, else 1
    shard_index: int | None = None  # None: torchrun's RANK, else 0
    full_hash: bool = False
    typical_per_band: int = 0  # typical examples per neuron, sign combination and band of |a| (0: none)


@dataclass
class PassPlan:
    """One process's part of the pass: what runs, where its files go, and what they record."""

    source: Any
    dataset: Any
    tokenizer: Any
    plan: list[list[int]]
    first: int
    last: int
    meta: dict[str, Any]
    final: Path
    partial: Path
    device: torch.device
    dtype: torch.dtype


def plan_pass(request: PassRequest) -> PassPlan:
    """Check the request, model and dataset, and lay out this shard's batches (nothing heavy is loaded)."""
    num_shards, shard_index = shard_settings(request.num_shards, request.shard_index)
    folder = request.datadir / request.save_to
    check_output_location(folder, "--save_to", inside=request.datadir)
    if is_dataset_folder(folder):  # a later a_dataset.py --overwrite of that dataset would take the statistics with it
        raise UserError(f"--save_to {request.save_to}: {folder} is a tokenized dataset; write the statistics into a folder "
                        "of their own (another --save_to)")
    device = parse_device(rank_device(request.device))  # under torchrun, --device cuda is this process's GPU
    dtype = parse_dtype(request.dtype, device)
    source = resolve_model(request.model, full_hash=request.full_hash)
    arch = read_arch(source)
    arch.require_gated(source.name, "the pass records gate and linear pre-activations")
    dataset, data_meta = load_tokenized(request.datadir / request.dataset)
    tokenizer = load_tokenizer(source)
    tokenizer_print = check_vocabulary(data_meta, tokenizer, arch.vocab_size, source.argument)  # before the model loads
    k = request.examples_per_neuron
    if not 1 <= k <= len(dataset):
        raise UserError(f"--examples_per_neuron {k}: must be between 1 and the dataset's {len(dataset)} documents")
    plan = batch_plan(document_lengths(dataset), request.batch_size)
    first, last = shard_range(len(plan), num_shards, shard_index)
    # the token every document starts with (BOS, or EOS where the dataset put that first, as for OLMo)
    first_token = data_meta.get("bos_token_id", tokenizer.bos_token_id) if data_meta.get("add_bos_token", True) else None
    meta = {"model": source.name, "provenance": source.provenance, "gguf": source.is_gguf, "model_path": str(source.path),
            **made_from(weights=source.weights_fingerprint, dataset=data_meta["fingerprint"], tokenizer=tokenizer_print),
            "dataset": str((request.datadir / request.dataset).resolve()), "documents": len(dataset),
            "tokens": data_meta["tokens"], "k": k, "batch_size": request.batch_size, "dtype": str(dtype).removeprefix("torch."),
            "n_layers": arch.n_layers, "d_mlp": arch.d_mlp, "num_shards": num_shards, "shard_index": shard_index,
            "first_batch": first, "last_batch": last, "batches": len(plan), "statistics_version": STATISTICS_VERSION,
            "examples_without_bos": not request.include_bos and first_token is not None, "bos_id": first_token,
            "typical_per_band": request.typical_per_band, "versions": package_versions()}
    return PassPlan(source, dataset, tokenizer, plan, first, last, meta, stats_path(folder, num_shards, shard_index),
                    stats_path(folder, num_shards, shard_index, partial=True), device, dtype)


def run_pass(model: Any, dataset: Any, stats: NeuronStats, plan: list[list[int]], batches: range, pad_id: int,
             device: torch.device, on_checkpoint: Callable[[int], None] | None = None, checkpoint_every: int = 0,
             progress: Any = None, bos_id: int | None = None) -> int:
    """Run the batches `batches` of `plan` over `dataset` (rows with input_ids, attention_mask) into `stats`.

    A document's first token, when it is `bos_id`, is no example (None: every token may be one).

    After every `checkpoint_every` batches (and on KeyboardInterrupt, between batches)
    `on_checkpoint(next_batch)` is called. Returns the number of tokens processed.
    """
    reducer = BatchReducer(stats, bos_id)
    tokens = 0
    with mlp_hooks(model, reducer, range(stats.keys.shape[0])):
        for batch in padded_batches(dataset, plan, pad_id, device, batches, progress):
            docs = torch.tensor(batch.docs, device=device)
            reducer.start(batch.attention_mask, batch.input_ids, docs)
            try:
                run_model(model, batch.input_ids, batch.attention_mask)
            except KeyboardInterrupt:
                if on_checkpoint is not None:
                    on_checkpoint(batch.index)  # statistics are still those of the batches before this one
                raise
            reducer.apply(docs)
            tokens += batch.tokens
            if on_checkpoint is not None and checkpoint_every and (batch.index + 1 - batches.start) % checkpoint_every == 0 \
                    and batch.index + 1 < batches.stop:
                on_checkpoint(batch.index + 1)
    return tokens


def start_or_resume(run: PassPlan, overwrite: bool) -> tuple[NeuronStats, int]:
    """Empty statistics at the shard's first batch, or the checkpoint's and the batch it stopped at."""
    if run.partial.exists() and not overwrite:
        stats, _, data = load_stats(run.partial, {**pass_identity(run.meta), "shard_index": run.meta["shard_index"],
                                                   "num_shards": run.meta["num_shards"]})
        start = data.get("next_batch")
        if isinstance(start, bool) or not isinstance(start, int) or not run.first <= start <= run.last:
            raise UserError(f"{run.partial}: not a checkpoint of this shard (next batch {start!r}, outside "
                            f"{run.first}..{run.last}); {START_AGAIN}")
        print(f"resuming from the checkpoint at batch {start} of {run.first}..{run.last}")
        return stats.to(run.device), start
    meta = run.meta
    return NeuronStats.empty(meta["n_layers"], meta["d_mlp"], meta["k"], run.device, meta["typical_per_band"]), run.first


def collect(run: PassPlan, overwrite: bool, checkpoint_every: int, stop_after_batches: int | None = None) -> bool:
    """Run (or resume) this shard's pass, with checkpoints, and write its statistics file (call it while
    holding the lock of `run.final`); returns whether it finished (False: stopped by `stop_after_batches`)."""
    for path in (run.final, run.partial):
        remove_stale_temporaries(path)  # of a write that was killed: no other process writes them now
    stats, start = start_or_resume(run, overwrite)  # a checkpoint that cannot be resumed stops the run before the model loads
    model, tokenizer = load_hf_model(run.source, dtype=run.dtype, device=run.device, tokenizer=run.tokenizer)
    decoder_layers(model)
    check_activation_signs(model)
    stop = run.last if stop_after_batches is None else min(run.last, start + stop_after_batches)

    def checkpoint(next_batch: int) -> None:
        save_stats(stats, run.meta, run.partial, next_batch=next_batch)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    started = time.perf_counter()
    shard = f"shard {run.meta['shard_index'] + 1}/{run.meta['num_shards']}"
    with tqdm(total=stop - start, desc=f"batches ({shard})", unit="batch") as progress:
        bos_id = run.meta["bos_id"] if run.meta["examples_without_bos"] else None
        tokens = run_pass(model, run.dataset, stats, run.plan, range(start, stop), pad_id, run.device,
                          on_checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress, bos_id=bos_id)
    seconds = time.perf_counter() - started
    if stop < run.last:  # --stop_after_batches: leave a checkpoint, as a killed run would
        checkpoint(stop)
        print(f"stopped after batch {stop}; rerun to resume")
        return False
    run.meta.update({"seconds": round(seconds, 2), "tokens_per_second": round(tokens / max(seconds, 1e-9), 1)})
    save_stats(stats, run.meta, run.final)
    run.partial.unlink(missing_ok=True)
    peak = (torch.cuda.max_memory_allocated(run.device) / 2**30 if run.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    print(f"{tokens:,} tokens in {seconds:.1f} s ({tokens / max(seconds, 1e-9):,.0f} tokens/s); "
          f"peak {'GPU' if run.device.type == 'cuda' else 'process'} memory {peak:.2f} GiB -> {run.final}")
    report_nonfinite(stats, run.meta["dtype"])
    if run.meta["num_shards"] == 1:  # stats.pt: it supersedes shards of this run split otherwise
        retire_other_splits(run.final.parent, run.meta, 1)
    return True


def run_or_reuse(run: PassPlan, overwrite: bool, checkpoint_every: int, stop_after_batches: int | None = None) -> bool:
    """This shard's statistics file: kept when it exists for these settings (unless `overwrite`), else computed
    or resumed under its lock. Returns whether it is this run's finished file (False: stopped early by
    `stop_after_batches`, even where an earlier run's file is still there)."""
    with hold_lock(run.final):
        if run.final.exists() and not overwrite:
            load_stats(run.final, pass_identity(run.meta))
            print(f"{run.final} exists for these settings; nothing to do (--overwrite recomputes)")
            return True
        return collect(run, overwrite, checkpoint_every, stop_after_batches)


def merged_exists(run: PassPlan, overwrite: bool) -> bool:
    """Whether the merged stats.pt of this run's folder exists for these settings (and is not to be overwritten)."""
    merged = stats_path(run.final.parent)
    if overwrite or not merged.exists():
        return False
    load_stats(merged, pass_identity(run.meta))
    return True


def merge_by_first_rank(folder: Path, num_shards: int) -> Path:
    """Merge the shard files of `folder` into stats.pt, under its lock."""
    with hold_lock(stats_path(folder)):
        return merge_shards(folder, num_shards)


def pass_by_ranks(request: PassRequest, ranks: Ranks, overwrite: bool, checkpoint_every: int,
                  stop_after_batches: int | None = None) -> int:
    """The pass as the ranks of one torchrun command: rank r runs (or resumes, or keeps) shard r of WORLD_SIZE,
    then rank 0 merges the shards into stats.pt, exactly the statistics of one process. A mistake on any rank
    (bad input, ranks started with other flags) ends every rank with the same line."""
    run = together(ranks, lambda: plan_pass(request))
    check_same(ranks, {**pass_identity(run.meta), "num_shards": run.meta["num_shards"], "batches": run.meta["batches"],
                       "save_to": str(run.final.parent.resolve()), "overwrite": overwrite,
                       "checkpoint_every": checkpoint_every, "stop_after_batches": stop_after_batches})
    if broadcast(ranks, together(ranks, lambda: merged_exists(run, overwrite), lambda r: r.first)):
        if ranks.first:
            print(f"{stats_path(run.final.parent)} exists for these settings; nothing to do (--overwrite recomputes)")
        return 0
    finished = all_gather(ranks, together(ranks, lambda: run_or_reuse(run, overwrite, checkpoint_every, stop_after_batches)))
    if not all(finished):
        if ranks.first:
            print(f"ranks {[r for r, done in enumerate(finished) if not done]} stopped early; rerun the same command to resume")
        return 0
    path = together(ranks, lambda: merge_by_first_rank(run.final.parent, ranks.world), lambda r: r.first)
    if ranks.first:
        print(f"merged {ranks.world} shards -> {path}")
    return 0
