"""Probe a text of one's own: g, u and a of chosen neurons at every token, the neurons with the largest |a| at each
token, and the neurons that fire most on the whole text, relative to their distribution on the dataset of the
statistics (percentiles from the histogram of the activation pass), written as `probe.json` and a self-contained
`probe.html` (the viewer's style, drawn by `assets/probe.js`).

A text is one document or several (a .jsonl file: one per record); each starts with the BOS the dataset's
documents start with, and a text longer than the model's context runs in windows, each its own forward pass with
BOS first. BOS itself is run but not shown. Shapes: per-token values are [token] over the text's tokens (BOS left
out), the statistics' tables [layer neuron (bin)].

Layout: `<results>/<model>/<settings>/probe/<name>/probe.html`, `probe.json` and the folder's marker
(`gated_core.output_folders`: kind "probe", the digest of the text). The folder is written as one unit (staged
beside it, marked last, swapped in) under its lock; a folder of another text is replaced only with --overwrite
(with the default name the probe goes beside it, the name followed by the text's digest), and never a link or a
folder of the user's.

Non-finite values (a float16 model overflowing): JSON has no inf or NaN, so probe.json writes each as null with its
kind beside it (NON_FINITE_ENCODING) and its meta lists the tokens and neurons where the pass met one. NaN never
ranks: it is left out of the top lists and of each neuron's largest a; ±inf ranks by its magnitude (before every
finite value) and is flagged wherever it is shown.

A long text: probe.json holds every value (written a piece at a time), probe.html only as many tokens as a browser
lays out (PAGE_MAX_TOKENS, PAGE_MAX_BYTES): windows around the strongest tokens and the start of the text, which
the page and a note on stderr say.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from gated_core.artifacts import atomic_write_text, remove_stale_folders
from gated_core.cli import check_output_location, check_regular_file, parse_device, parse_dtype
from gated_core.errors import UserError
from gated_core.fingerprint import content_digest
from gated_core.models.arch import read_arch
from gated_core.models.loading import load_hf_model, load_tokenizer
from gated_core.models.sources import ModelSource, resolve_model
from gated_core.output_folders import check_output_folder, folder_marker, legacy_pattern, rewrite_folder
from neuroscope.activation_pass.activations import SIGN_COMBINATIONS
from neuroscope.activation_pass.store import Statistics, load_statistics
from neuroscope.classes.neuron_sets import parse_class
from neuroscope.core.histogram import histogram_codes, histogram_lookup
from neuroscope.core.hooks import mlp_hooks, run_model
from neuroscope.data.tokenization import document_start
from neuroscope.recompute.examples import Neuron, check_tokenizer, neuron_folder, requested_neurons
from neuroscope.view.checksums import LONE_SURROGATE
from neuroscope.view.html import ASSETS, scripts
from neuroscope.view.neuron_view import JSON_ESCAPES, token_texts
from neuroscope.view.pages import neuroscope_folder
from neuroscope.view.viewer import viewer_layers, viewer_neurons
from wcos_casestudies.results import ModelResults, Settings
from wcos_casestudies.section6 import stored_roles

PROBE_FOLDER = "probe"  # beside the model's `neuroscope` folder
PROBE_KIND = "probe"  # the kind of a probe's folder (its marker, gated_core.output_folders)
# what the previous version wrote in a probe folder (no marker): the two files, and the temporaries of their writes
PROBE_LEGACY = legacy_pattern(r"probe\.(json|html)")
PROBE_ADVICE = "choose another --name, or move that folder away yourself"
DIGEST_CHARS = 8  # hex digits of the text's digest after the default name, where a probe of another text has it
MAX_CHOSEN = 32  # neurons coloured on one probe page
SLUG_WORDS, SLUG_CHARS = 6, 40  # the default name: the text's first words, at most this long
NAN_SCORE = -1.0  # the score of NaN among |a| (>= 0) in the top lists: NaN never ranks
JSON_SEPARATORS = (",", ":")
JSON_PIECE_TOKENS = 1 << 16  # tokens of probe.json turned into text at once (its memory stays that of a piece)
# the page shows at most this many tokens and about this much data (Chromium lays out a 10 MB text's page of 310 MB
# no more): beyond, windows of the text (probe.json holds every value)
PAGE_MAX_TOKENS = 100_000
PAGE_MAX_BYTES = 32 << 20
PAGE_SAMPLE_TOKENS = 1024  # tokens whose page data give the bytes a token takes on the page
PAGE_CONTEXT = 32  # tokens shown on each side of a strong token in a window of the page
STRONG_PER_NEURON = 5  # strongest tokens of each chosen neuron with a window on the page
LISTED_NON_FINITE = 1000  # neurons named in meta's non_finite (all are counted)
NON_FINITE_ENCODING = ("JSON has no inf or NaN: a non-finite value is written null, with its kind (\"inf\", \"-inf\" or "
                       "\"nan\") beside it: in a chosen neuron's \"non_finite\" ({g|u|a: {token: kind}}), as a third item "
                       "of a top-list entry ([name, null, kind]), in a whole-text row's \"non_finite\"; a combination of "
                       "a NaN g or u is -1, a percentile of a NaN a null")


@dataclass(frozen=True)
class ProbeRequest:
    """What the probe is asked for: the model and weight settings, the text (documents), the neurons, filters."""

    model: str
    documents: list[str]  # each document runs with BOS first
    settings: Settings
    results_dir: Path
    neurons: list[str] = field(default_factory=list)  # LAYER.NEURON names to colour the text by
    neurons_from: Path | None = None  # a file of more such names
    name: str | None = None  # the output folder's name (None: from the text)
    top: int = 10  # neurons by |a| per token, and neurons of the whole-text table
    layers: list[int] | None = None  # the layers of the top lists (None: all)
    classes: list[str] = field(default_factory=list)  # IO class names: the top lists keep only their neurons
    roles: list[str] = field(default_factory=list)  # functional roles (roles.pt): the top lists keep only their neurons
    datadir: Path | None = None  # with `activations`: the statistics that give percentiles
    activations: str | None = None
    window_tokens: int | None = None  # tokens per forward pass, BOS included (None: the model's context)
    loader: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    full_hash: bool = False
    overwrite: bool = False  # replace a probe of another text under the same --name


@dataclass
class ProbeRun:
    """A checked request: everything the pass needs, found before the model loads."""

    request: ProbeRequest
    source: ModelSource
    results: ModelResults
    folder: Path  # where probe.html and probe.json go
    tokenizer: Any
    neurons: list[Neuron]
    allowed: torch.Tensor  # [layer neuron] bool: the neurons the top lists may show
    token_ids: list[int]  # the text's tokens, every document's after the other (no BOS)
    doc_starts: list[int]  # [document + 1] where each document starts in token_ids
    bos_id: int | None
    device: Any
    dtype: Any
    stats: Statistics | None = None
    notes: list[str] = field(default_factory=list)
    text_digest: str = ""  # of the documents: the folder's marker records it


@dataclass
class NonFinite:
    """Where the pass met inf or NaN in g, u or a (a float16 model overflowing, say), in the layers it reads."""

    tokens: torch.Tensor  # [token] bool
    neurons: torch.Tensor  # [layer neuron] bool
    count: int = 0  # non-finite values, of g, u and a together

    @classmethod
    def empty(cls, tokens: int, n_layers: int, d_mlp: int) -> NonFinite:
        return cls(torch.zeros(tokens, dtype=torch.bool), torch.zeros(n_layers, d_mlp, dtype=torch.bool))

    def add(self, layer: int, start: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        """Count the non-finite values of one layer's g, u, a [pos neuron] of a window starting at token `start`."""
        finite = [torch.isfinite(values) for values in (g, u, a)]
        bad = ~(finite[0] & finite[1] & finite[2])
        if bool(bad.any()):
            self.count += sum(int((~values).sum()) for values in finite)
            self.tokens[start:start + bad.shape[0]] |= bad.any(dim=1).cpu()
            self.neurons[layer] |= bad.any(dim=0).cpu()


@dataclass
class ProbeValues:
    """What one pass over the text found; tokens are those of `ProbeRun.token_ids`."""

    chosen: dict[Neuron, dict[str, torch.Tensor]]  # neuron -> "g", "u", "a": [token] float32
    top_values: torch.Tensor  # [token top] float32: a of the neurons with the largest |a| at each token (NaN: none)
    top_ids: torch.Tensor  # [token top] int64: their layer * d_mlp + neuron
    max_values: torch.Tensor  # [layer neuron] float32: the largest a over the text (NaN left out; -inf: none)
    max_tokens: torch.Tensor  # [layer neuron] int64: the token where it is
    windows: list[tuple[int, int]]  # [start, stop) in token_ids of each forward pass
    window_tokens: int  # tokens per forward pass at most, BOS included
    non_finite: NonFinite
    seconds: float = 0.0  # the forward passes with their hooks


def decode_utf8(data: bytes, what: str) -> str:
    """Bytes as UTF-8 text; anything else is refused in one line that names the byte (`what`: where they come from)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def check_unicode(text: str, what: str) -> None:
    """Refuse a text with a lone surrogate (a JSON string's unpaired "\\udc80", or an argument of undecodable bytes):
    no tokenizer takes one, and no UTF-8 file could hold it. Refused, not replaced, so that the probe reads the very
    text it was given."""
    found = LONE_SURROGATE.search(text)
    if found is not None:
        raise UserError(f"{what}: not valid Unicode (a lone surrogate U+{ord(found.group()):04X} at character "
                        f"{found.start()}); give UTF-8 text")


def read_stdin(stream: Any) -> str:
    """The text piped into stdin, read as bytes and decoded as UTF-8 (a text stream without bytes, as is)."""
    raw = getattr(stream, "buffer", None)
    return decode_utf8(raw.read(), "stdin") if raw is not None else stream.read()


def read_documents(path: Path) -> list[str]:
    """The documents of a --file: a .txt file is one; a .jsonl file has one per line, its "text" field."""
    if path.suffix not in (".txt", ".jsonl"):
        raise UserError(f"--file {path}: give a .txt file or a .jsonl file with a \"text\" field per line")
    check_regular_file(path, "--file")
    text = decode_utf8(path.read_bytes(), f"--file {path}")
    if path.suffix == ".txt":
        return [text]
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"--file {path}, line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UserError(f"--file {path}, line {number}: no \"text\" field with a string")
        check_unicode(record["text"], f"--file {path}, line {number}")
        documents.append(record["text"])
    return documents


def default_name(text: str) -> str:
    """A short, safe folder name from a text: its first words, lower case, ASCII letters and digits joined by '-'."""
    words = re.findall(r"[a-z0-9]+", text.lower())[:SLUG_WORDS]
    return "-".join(words)[:SLUG_CHARS].strip("-") or "text"


def neuron_name(layer: int, neuron: int) -> str:
    return f"{layer}.{neuron}"


def allowed_neurons(request: ProbeRequest, results: ModelResults, n_layers: int, d_mlp: int) -> torch.Tensor:
    """[layer neuron] bool: the neurons of --layers, --classes and --roles (all of them where none is given)."""
    allowed = torch.ones(n_layers, d_mlp, dtype=torch.bool)
    if request.layers is not None:
        wrong = [layer for layer in request.layers if layer >= n_layers]
        if wrong:
            raise UserError(f"--layers {wrong[0]}: out of range; the model has layers 0..{n_layers - 1}")
        allowed[[layer for layer in range(n_layers) if layer not in request.layers]] = False
    if request.classes:
        codes = torch.tensor([parse_class(word) for word in request.classes])
        allowed &= torch.isin(results.categories(), codes)
    if request.roles:
        stored = stored_roles(results) or {}
        masks = stored.get("roles") or {}
        missing = [role for role in request.roles if role not in masks]
        if missing:
            known = ", ".join(masks) if masks else "none (run wcos_casestudies/casestudies.py for this model first)"
            raise UserError(f"--roles {missing[0]}: no such role in roles.pt; roles: {known}")
        allowed &= torch.stack([masks[role].bool() for role in request.roles]).any(dim=0)
    if not bool(allowed.any()):
        raise UserError("no neuron passes --layers, --classes and --roles together; the top lists would be empty")
    return allowed


def check_text(documents: list[str]) -> None:
    """Refuse a text with nothing but white space, or with a lone surrogate (`check_unicode`)."""
    if not documents or not any(text.strip() for text in documents):
        raise UserError("the text is empty; give some text with --text, --file or on stdin")
    for number, text in enumerate(documents, start=1):
        check_unicode(text, "the text" if len(documents) == 1 else f"the text's document {number}")


def holds_text(folder: Path, digest: str) -> bool:
    """Whether `folder` is a probe folder (marked) of the text whose digest is `digest`."""
    marker = folder_marker(folder, PROBE_KIND)
    return marker is not None and marker.get("text_digest") == digest


def check_probe_folder(folder: Path, digest: str, overwrite: bool) -> None:
    """Refuse a folder that the probe may not replace (`output_folders.check_output_folder`: a link, a file, a folder of
    the user's), and, unless `overwrite`, one that holds a probe of another text (or of an earlier version, which
    records no text)."""
    check_output_folder(folder, PROBE_KIND, PROBE_LEGACY, PROBE_ADVICE)
    if overwrite or not folder.is_dir() or not any(folder.iterdir()) or holds_text(folder, digest):
        return
    earlier = "" if folder_marker(folder, PROBE_KIND) else " (or one of an earlier version, which records no text)"
    raise UserError(f"{folder} holds a probe of another text{earlier}; give --overwrite to replace it, or another --name")


def probe_folder(request: ProbeRequest, results: ModelResults, digest: str) -> Path:
    """The folder of the probe, checked: --name's, or the text's first words; where another text's probe (or anything
    else) has those, the words and the text's digest, beside it (with a note)."""
    base = results.folder / PROBE_FOLDER
    check_output_location(base, "--results_dir", inside=request.results_dir)
    if request.name is not None:
        check_probe_folder(base / request.name, digest, request.overwrite)
        return base / request.name
    folder = base / default_name(" ".join(request.documents))
    taken = folder.exists() or folder.is_symlink()
    if not taken or holds_text(folder, digest):
        check_probe_folder(folder, digest, overwrite=False)
        return folder
    beside = base / f"{folder.name}-{digest[:DIGEST_CHARS]}"
    check_probe_folder(beside, digest, overwrite=False)
    print(f"note: {folder} holds another text's probe (or is not a probe's folder); this probe goes beside it, to "
          f"{beside.name} (give --name to choose the name)", file=sys.stderr)
    return beside


def tokenize_documents(tokenizer: Any, documents: list[str]) -> tuple[list[int], list[int]]:
    """The tokens of every document, one after the other, and where each document starts [document + 1]."""
    check_text(documents)
    ids: list[int] = []
    starts = [0]
    for row in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        ids += row
        starts.append(len(ids))
    if not ids:
        raise UserError("the text has no tokens")
    return ids, starts


def open_probe(request: ProbeRequest) -> ProbeRun:
    """Check the model, the neurons, the statistics, the filters, the text and the output folder before any work
    (the model is not loaded yet)."""
    check_text(request.documents)
    device = parse_device(request.device)
    check_output_location(request.results_dir, "--results_dir")
    source = resolve_model(request.model, full_hash=request.full_hash)
    arch = read_arch(source)
    arch.require_gated(request.model, "the probe reads gate and linear inputs")
    wanted = request.neurons or request.neurons_from is not None
    neurons = requested_neurons(request.neurons, request.neurons_from, source) if wanted else []
    if len(neurons) > MAX_CHOSEN:
        raise UserError(f"--neurons: {len(neurons)} neurons; a probe colours the text by at most {MAX_CHOSEN}")
    stats = statistics(request, source)
    results = ModelResults(source, request.settings, root=request.results_dir, loader=request.loader, device=device)
    digest = content_digest(request.documents)
    folder = probe_folder(request, results, digest)
    allowed = allowed_neurons(request, results, arch.n_layers, arch.d_mlp)
    tokenizer = load_tokenizer(source)
    token_ids, doc_starts = tokenize_documents(tokenizer, request.documents)
    run = ProbeRun(request, source, results, folder, tokenizer, neurons, allowed, token_ids, doc_starts,
                   document_start(tokenizer, True)["bos_token_id"], device, None, stats, text_digest=digest)
    if stats is not None:
        check_tokenizer(tokenizer, stats.meta, None, source)
        run.bos_id = stats.meta.first_token(run.bos_id)
        if stats.histogram is None:
            run.notes.append("statistics of an older b_activations.py have no histogram: no percentiles")
    recorded = stats.meta.dtype if stats is not None else None
    run.dtype = getattr(torch, recorded) if request.dtype == "auto" and recorded else parse_dtype(request.dtype, device)
    return run


def statistics(request: ProbeRequest, source: ModelSource) -> Statistics | None:
    """The statistics of --datadir / --activations (checked to be of this model), or None without --datadir."""
    if request.datadir is None:
        if request.activations is not None:
            raise UserError("--activations names statistics inside --datadir; give --datadir too")
        return None
    from neuroscope.constants import DEFAULT_ACTIVATIONS

    return load_statistics(source, request.datadir, request.activations or DEFAULT_ACTIVATIONS,
                           " (or leave out --datadir: the probe then shows no percentiles)")


def plan_windows(doc_starts: list[int], room: int) -> list[tuple[int, int]]:
    """[start, stop) of every forward pass: each document cut into pieces of at most `room` tokens."""
    return [(start, min(start + room, stop)) for first, stop in zip(doc_starts[:-1], doc_starts[1:])
            for start in range(first, stop, room)]


@dataclass
class WindowCapture:
    """The hooks' callback for one forward pass (batch 1): the chosen neurons' g, u, a, the per-layer top |a|
    candidates, the running maximum of a and the non-finite values, all of the window's text tokens (BOS, when
    first, left out). NaN never ranks (below every |a| in the top lists, left out of the maximum); ±inf ranks by
    its magnitude."""

    run: ProbeRun
    skip: int  # 1 when the window starts with BOS
    start: int  # the window's first text token in token_ids
    max_values: torch.Tensor  # [layer neuron], updated in place
    max_tokens: torch.Tensor
    chosen: dict[Neuron, dict[str, list[torch.Tensor]]]
    non_finite: NonFinite  # updated in place
    candidates: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # ([pos k] a, [pos k] ids)

    def __call__(self, layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        g, u, a = (t[0, self.skip:] for t in (g, u, a))  # [pos neuron]
        a = a.float()
        for neuron in (n for lay, n in self.run.neurons if lay == layer):
            for key, values in (("g", g), ("u", u), ("a", a)):
                self.chosen[(layer, neuron)][key].append(values[:, neuron].float().cpu())
        self.non_finite.add(layer, self.start, g, u, a)
        allowed = self.run.allowed[layer]
        count = int(allowed.sum())
        if count == 0:
            return
        scores = rank_scores(a)
        if count < len(allowed):
            scores.masked_fill_(~allowed.to(a.device), -torch.inf)
        index = scores.topk(min(self.run.request.top, count), dim=-1).indices  # [pos k]
        self.candidates.append((a.gather(-1, index).cpu(), (index + layer * a.shape[-1]).cpu()))
        best, where = a.masked_fill(a.isnan(), -torch.inf).max(dim=0)
        better = best.cpu() > self.max_values[layer]
        self.max_values[layer] = torch.where(better, best.cpu(), self.max_values[layer])
        self.max_tokens[layer] = torch.where(better, where.cpu() + self.start, self.max_tokens[layer])

    def top(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's neurons with the largest |a| at each token, over every layer: a and ids, [pos k]."""
        values = torch.cat([v for v, _ in self.candidates], dim=-1)
        ids = torch.cat([i for _, i in self.candidates], dim=-1)
        order = rank_scores(values).topk(min(k, values.shape[-1]), dim=-1).indices
        return values.gather(-1, order), ids.gather(-1, order)


def rank_scores(a: torch.Tensor) -> torch.Tensor:
    """What the top lists rank by: |a|, NaN below every value (NAN_SCORE) so that it never ranks before a number."""
    return a.abs().masked_fill_(a.isnan(), NAN_SCORE)


def run_probe(run: ProbeRun) -> ProbeValues:
    """Load the model and run every window of the text once with the activation pass's hooks."""
    model, _ = load_hf_model(run.source, dtype=run.dtype, device=run.device, tokenizer=run.tokenizer)
    return probe_pass(run, model)


def probe_pass(run: ProbeRun, model: Any) -> ProbeValues:
    """Run every window of the text once through `model` (loaded in the run's dtype, on its device) with the
    activation pass's hooks."""
    context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or len(run.token_ids) + 1
    window = min(run.request.window_tokens or context, context)
    skip = int(run.bos_id is not None)
    if window <= skip:
        raise UserError(f"--window_tokens {window}: a window needs room for BOS and at least one token")
    windows = plan_windows(run.doc_starts, window - skip)
    if len(windows) > len(run.doc_starts) - 1:
        print(f"note: {len(run.token_ids)} tokens in {len(run.doc_starts) - 1} document(s) and a window of {window} tokens "
              f"(the model's context: {context}): {len(windows)} windows, each its own forward pass"
              f"{' with BOS first' if skip else ''}, so no token sees the text before its window", file=sys.stderr)
    n_layers, d_mlp = run.allowed.shape
    max_values = torch.full((n_layers, d_mlp), -torch.inf)
    max_tokens = torch.zeros((n_layers, d_mlp), dtype=torch.long)
    chosen = {neuron: {"g": [], "u": [], "a": []} for neuron in run.neurons}
    non_finite = NonFinite.empty(len(run.token_ids), n_layers, d_mlp)
    layers = sorted({layer for layer, _ in run.neurons} | set(torch.nonzero(run.allowed.any(dim=1)).flatten().tolist()))
    top_values, top_ids = [], []
    started = time.perf_counter()
    for start, stop in windows:
        ids = torch.tensor([([run.bos_id] if skip else []) + run.token_ids[start:stop]], device=run.device)
        capture = WindowCapture(run, skip, start, max_values, max_tokens, chosen, non_finite)
        with mlp_hooks(model, capture, layers, stop_after=layers[-1]):
            run_model(model, ids, torch.ones_like(ids))
        values, neuron_ids = capture.top(run.request.top)
        top_values.append(values)
        top_ids.append(neuron_ids)
    seconds = time.perf_counter() - started
    joined = {neuron: {key: torch.cat(parts) for key, parts in values.items()} for neuron, values in chosen.items()}
    report_non_finite(run, non_finite)
    return ProbeValues(joined, torch.cat(top_values), torch.cat(top_ids), max_values, max_tokens, windows, window,
                       non_finite, seconds)


def report_non_finite(run: ProbeRun, found: NonFinite) -> None:
    """A note (on stderr and on the page) of how many values of g, u, a were inf or NaN, if any."""
    if not found.count:
        return
    note = (f"{found.count:,} non-finite values (inf or NaN) of g, u or a, at {int(found.tokens.sum()):,} token(s), in "
            f"{int(found.neurons.sum()):,} neuron(s) (the model overflows in {str(run.dtype).removeprefix('torch.')}? "
            "try --dtype float32): written null in probe.json (meta.non_finite lists where), flagged on the page; "
            "NaN never ranks, ±inf ranks by its magnitude")
    run.notes.append(note)
    print(f"note: {note}", file=sys.stderr)


def histogram_percentiles(histogram: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The percentile (0 to 100) of each value in the distribution that a histogram of the activation pass counts:
    100 × (the counts in the bins below the value's bin + half the count of the value's bin) / all counts, i.e. a
    value is taken to lie in the middle of its bin (bins of `histogram.histogram_edges`, the value's bin read from its
    float bits as the pass does). `histogram` [... bin] int64, `values` [... n] -> [... n] float64; NaN where a
    histogram counts nothing."""
    bins = histogram_lookup()[histogram_codes(values.float().contiguous())].long()
    counts = histogram.to(torch.float64)
    below = torch.cumsum(counts, dim=-1) - counts
    total = counts.sum(dim=-1, keepdim=True)
    return 100.0 * (below.gather(-1, bins) + counts.gather(-1, bins) / 2) / total


def neuron_links(run: ProbeRun, names: set[str]) -> dict[str, str]:
    """Relative links from probe.html to each neuron: its own page where it has one, else the viewer with the fewest
    layers that holds that very neuron (by the viewer's own index, `viewer.viewer_neurons`; a viewer of a few layers,
    which may be shared, is preferred to the whole one), else none."""
    pages = neuroscope_folder(run.results)
    folders = sorted(folder for folder in pages.glob("*/") if not folder.name.startswith(".")  # not a swap's leftover
                     and (folder / "viewer.html").is_file()) if names else []
    viewers = sorted((len(viewer_layers(folder)), folder.name, viewer_neurons(folder)) for folder in folders)
    links = {}
    for name in sorted(names):
        layer, neuron = map(int, name.split("."))
        if (neuron_folder(pages, (layer, neuron)) / "vis.html").is_file():
            links[name] = f"../../neuroscope/L{layer}/N{neuron}/vis.html"
            continue
        holder = next((folder for _, folder, held in viewers if (layer, neuron) in held), None)
        if holder is not None:
            links[name] = f"../../neuroscope/{holder}/viewer.html#{name}"
    return links


def non_finite_kind(value: float) -> str:
    """How a non-finite value is written beside its null: "nan", "inf" or "-inf"."""
    return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"


def json_number(value: float) -> float | None:
    """A value as a JSON number, None (null) when it is inf or NaN."""
    return value if math.isfinite(value) else None


def json_numbers(values: torch.Tensor) -> list[float | None]:
    """A tensor's values as JSON numbers, None (null) for inf and NaN."""
    if bool(torch.isfinite(values).all()):
        return values.tolist()
    return [json_number(value) for value in values.tolist()]


def whole_text_top(run: ProbeRun, values: ProbeValues) -> list[dict[str, Any]]:
    """The allowed neurons that fire most on the text: with a histogram, by the percentile of their largest a among
    the dataset's activations (then by how far it passes the dataset's largest a); without, by their largest a.
    NaN never ranks (each neuron's largest a leaves it out, and a neuron with no other a has no row); +inf ranks
    first, and a row of a non-finite a says so ("non_finite")."""
    d_mlp = run.allowed.shape[1]
    best = values.max_values.masked_fill(~run.allowed, -torch.inf)
    ranked = min(run.request.top, int((best > -torch.inf).sum()))
    stats = run.stats
    if stats is None or stats.histogram is None:
        order = best.flatten().topk(ranked).indices
        percentiles = torch.full((len(order),), torch.nan, dtype=torch.float64)
    else:
        percentile = histogram_percentiles(stats.histogram, best.clamp_min(-3e38)[..., None])[..., 0]
        over = best / stats.top_values[..., 0].float().abs().clamp_min(1e-12)
        key = torch.stack([percentile.masked_fill(best == -torch.inf, -1.0).flatten(), over.double().flatten()], dim=1)
        order = torch.tensor(top_by_keys(key, ranked), dtype=torch.long)
        percentiles = percentile.flatten()[order]
    rows = []
    for flat, percentile in zip(order.tolist(), json_numbers(percentiles)):
        layer, neuron = divmod(flat, d_mlp)
        a = float(values.max_values[layer, neuron])
        row = {"neuron": neuron_name(layer, neuron), "a": json_number(a), "token": int(values.max_tokens[layer, neuron]),
               "percentile": percentile}
        if not math.isfinite(a):
            row["non_finite"] = non_finite_kind(a)
        if stats is not None:
            row["dataset_max"] = json_number(float(stats.top_values[layer, neuron, 0]))
        rows.append(row)
    return rows


def top_by_keys(key: torch.Tensor, k: int) -> list[int]:
    """The rows of `key` [n 2] with the largest first key, ties broken by the largest second key: the first k."""
    import numpy as np

    keys = key.numpy()
    return np.lexsort((-keys[:, 1], -keys[:, 0]))[:k].tolist()


def chosen_arrays(run: ProbeRun, values: ProbeValues) -> dict[str, dict[str, torch.Tensor]]:
    """Per chosen neuron, [token] each: g, u and a, the sign combination of (g, u) (an index into
    SIGN_COMBINATIONS; -1 where g or u is NaN) and, with a histogram, the percentile of a on the dataset (NaN where
    a is NaN)."""
    arrays = {}
    for (layer, neuron), found in values.chosen.items():
        g, u, a = found["g"], found["u"], found["a"]
        entry = {"g": g, "u": u, "a": a,
                 "combination": (2 * (g <= 0).long() + (u <= 0).long()).masked_fill(g.isnan() | u.isnan(), -1)}
        if run.stats is not None and run.stats.histogram is not None:
            entry["percentile"] = histogram_percentiles(run.stats.histogram[layer, neuron], a).masked_fill(a.isnan(), torch.nan)
        arrays[neuron_name(layer, neuron)] = entry
    return arrays


Piece = slice | torch.Tensor  # tokens of the text: a range, or their indices (ascending)


@dataclass
class ProbeData:
    """The probe's per-token data, turned into JSON a piece of tokens at a time: for probe.json every token, for
    the page those it shows. Indices are of the text's tokens."""

    ids: torch.Tensor  # [token] int64: the token ids
    texts: dict[int, str]  # the text of each token id of the text
    names: list[str]  # [layer * d_mlp + neuron]: the neurons' names
    neurons: dict[str, dict[str, torch.Tensor]]  # chosen neuron -> chosen_arrays' [token] arrays
    top_values: torch.Tensor  # [token top], as ProbeValues'
    top_ids: torch.Tensor

    def tokens(self, piece: Piece) -> list[str]:
        return [self.texts[i] for i in self.ids[piece].tolist()]

    def top(self, piece: Piece) -> list[list[list[Any]]]:
        """Each token's top list: [name, a], or [name, null, kind] for ±inf; NaN left out."""
        return [[[self.names[i], a] if math.isfinite(a) else [self.names[i], None, non_finite_kind(a)]
                 for a, i in zip(row_a, row_i) if not math.isnan(a)]
                for row_a, row_i in zip(self.top_values[piece].tolist(), self.top_ids[piece].tolist())]

    def values(self, name: str, key: str, piece: Piece) -> list[Any]:
        found = self.neurons[name][key][piece]
        return found.tolist() if key == "combination" else json_numbers(found)

    def non_finite(self, name: str, pieces: list[Piece]) -> dict[str, dict[str, str]]:
        """{g|u|a: {token: kind}} of the non-finite values of a chosen neuron at the tokens of `pieces`."""
        found: dict[str, dict[str, str]] = {}
        for key in ("g", "u", "a"):
            for piece in pieces:
                where = piece if isinstance(piece, torch.Tensor) else torch.arange(piece.start, piece.stop)
                part = self.neurons[name][key][where]
                bad = ~torch.isfinite(part)
                for token, value in zip(where[bad].tolist(), part[bad].tolist()):
                    found.setdefault(key, {})[str(token)] = non_finite_kind(value)
        return found


def probe_data(run: ProbeRun, values: ProbeValues) -> ProbeData:
    """The per-token data of a finished pass, ready to be written."""
    ids = torch.tensor(run.token_ids, dtype=torch.long)
    known = torch.unique(ids).tolist()
    n_layers, d_mlp = run.allowed.shape
    names = [neuron_name(layer, neuron) for layer in range(n_layers) for neuron in range(d_mlp)]
    return ProbeData(ids, dict(zip(known, token_texts(run.tokenizer, known))), names, chosen_arrays(run, values),
                     values.top_values, values.top_ids)


def dumps(value: Any) -> str:
    """Compact JSON, never with NaN or inf."""
    return json.dumps(value, separators=JSON_SEPARATORS, allow_nan=False)


def write_list(handle: TextIO, pieces: Iterable[list[Any]]) -> None:
    """One JSON array written a piece (a list of its items) at a time."""
    handle.write("[")
    first = True
    for items in pieces:
        if items:
            handle.write(("" if first else ",") + dumps(items)[1:-1])
            first = False
    handle.write("]")


def write_payload(handle: TextIO, data: ProbeData, head: dict[str, Any], pieces: list[Piece]) -> None:
    """What probe.json holds and probe.html draws, {"tokens", "neurons", "top", "text_top", "links", "meta"}, for
    the tokens of `pieces`, written a piece at a time: the tokens' texts, each chosen neuron's arrays
    (`chosen_arrays`, and "non_finite"), each token's top list by |a| ([[name, a], ...]), then `head` (the whole-text
    table, the neurons' links, the run)."""
    handle.write('{"tokens":')
    write_list(handle, (data.tokens(piece) for piece in pieces))
    handle.write(',"neurons":{')
    for number, name in enumerate(data.neurons):
        handle.write(("," if number else "") + dumps(name) + ":{")
        for key in data.neurons[name]:
            handle.write(dumps(key) + ":")
            write_list(handle, (data.values(name, key, piece) for piece in pieces))
            handle.write(",")
        handle.write('"non_finite":' + dumps(data.non_finite(name, pieces)) + "}")
    handle.write('},"top":')
    write_list(handle, (data.top(piece) for piece in pieces))
    handle.write("," + dumps(head)[1:])


def non_finite_meta(values: ProbeValues) -> dict[str, Any]:
    """Meta's account of the non-finite values: how they are written, how many, at which tokens, in which neurons
    (the first LISTED_NON_FINITE named)."""
    found = values.non_finite
    neurons = torch.nonzero(found.neurons).tolist()
    return {"encoding": NON_FINITE_ENCODING, "count": found.count, "tokens": torch.nonzero(found.tokens).flatten().tolist(),
            "neurons": [neuron_name(layer, neuron) for layer, neuron in neurons[:LISTED_NON_FINITE]],
            "neuron_count": len(neurons)}


def probe_head(run: ProbeRun, values: ProbeValues) -> dict[str, Any]:
    """The parts of the payload that are not per token: the whole text's top neurons, the neurons' links, the run."""
    text_top = whole_text_top(run, values)
    d_mlp = run.allowed.shape[1]
    names = ({neuron_name(*n) for n in run.neurons} | {row["neuron"] for row in text_top} |
             {neuron_name(*divmod(i, d_mlp)) for i in torch.unique(values.top_ids).tolist()})
    stats = run.stats
    meta = {"model": run.source.name, "name": run.folder.name, "tokens": len(run.token_ids), "documents": run.doc_starts,
            "windows": [list(w) for w in values.windows], "window_tokens": values.window_tokens,
            "bos": token_texts(run.tokenizer, [run.bos_id])[0] if run.bos_id is not None else None,
            "dtype": str(run.dtype).removeprefix("torch."), "top": run.request.top, "caption": run.results.caption,
            "filters": {"layers": run.request.layers, "classes": run.request.classes, "roles": run.request.roles},
            "dataset": Path(stats.meta.dataset).name if stats is not None else None,
            "dataset_tokens": int(stats.meta.tokens) if stats is not None else None,
            "sign_combinations": list(SIGN_COMBINATIONS), "notes": run.notes, "non_finite": non_finite_meta(values)}
    return {"text_top": text_top, "links": neuron_links(run, names), "meta": meta}


def strong_tokens(data: ProbeData, text_top: list[dict[str, Any]]) -> list[int]:
    """The tokens the page shows first when it cannot show all: those of the whole-text table, in its order, then
    each chosen neuron's STRONG_PER_NEURON largest |a| (NaN last), by rank."""
    ranked = [rank_scores(arrays["a"]).topk(min(STRONG_PER_NEURON, len(data.ids))).indices.tolist()
              for arrays in data.neurons.values()]
    return [row["token"] for row in text_top] + [tokens[rank] for rank in range(STRONG_PER_NEURON)
                                                 for tokens in ranked if rank < len(tokens)]


def page_budget(data: ProbeData, tokens: int) -> int:
    """How many tokens one page may show: PAGE_MAX_TOKENS, fewer where their data (estimated from the first
    PAGE_SAMPLE_TOKENS) would pass PAGE_MAX_BYTES."""
    sample = min(tokens, PAGE_SAMPLE_TOKENS)
    text = io.StringIO()
    write_payload(text, data, {}, [slice(0, sample)])
    return min(PAGE_MAX_TOKENS, PAGE_MAX_BYTES * sample // max(len(text.getvalue()), 1))


def page_ranges(data: ProbeData, text_top: list[dict[str, Any]]) -> tuple[list[list[int]], int]:
    """The tokens probe.html shows, as [start, stop) ranges, and how many one page may show (`page_budget`): the
    whole text where it fits; else windows of ±PAGE_CONTEXT tokens around the strongest tokens (`strong_tokens`,
    while they fit) and then the start of the text, up to the budget."""
    tokens = len(data.ids)
    budget = page_budget(data, tokens) if tokens > PAGE_SAMPLE_TOKENS else tokens
    if tokens <= budget:
        return [[0, tokens]], budget
    shown, count = torch.zeros(tokens, dtype=torch.bool), 0
    for centre in strong_tokens(data, text_top):
        window = slice(max(0, centre - PAGE_CONTEXT), min(tokens, centre + PAGE_CONTEXT + 1))
        more = int((~shown[window]).sum())
        if count + more <= budget:
            shown[window], count = True, count + more
    shown[torch.nonzero(~shown).flatten()[:budget - count]] = True
    edges = torch.diff(torch.cat([torch.zeros(1), shown.float(), torch.zeros(1)]))
    return [list(pair) for pair in zip(torch.nonzero(edges > 0).flatten().tolist(),
                                       torch.nonzero(edges < 0).flatten().tolist())], budget


def page_meta(ranges: list[list[int]], tokens: int, budget: int) -> dict[str, Any]:
    """What the page shows of the text: its ranges, how many tokens, and a note where that is not all."""
    shown = sum(stop - start for start, stop in ranges)
    note = None if shown == tokens else (
        f"the text has {tokens:,} tokens, more than one page lays out ({budget:,} at most here): probe.html shows "
        f"{shown:,} of them, windows of ±{PAGE_CONTEXT} tokens around the strongest tokens (the whole-text table's and "
        "each chosen neuron's) and the start of the text; probe.json holds every value")
    return {"ranges": ranges, "tokens": shown, "complete": note is None, "note": note}


NO_SCRIPT = "This page needs JavaScript: it draws the text from the data it carries (no network needed)."
PROBE_STYLE = (".controls{display:flex;flex-wrap:wrap;gap:.5em 1.5em;align-items:center;margin:.6em 0}"
               ".probe-text .t{cursor:pointer} .t.picked{outline:2px solid #000}"
               ".t.nonfinite{outline:2px dashed #c00;outline-offset:-2px} .gap{color:#999;font-style:italic}"
               ".doc-break{display:block;border-top:1px dashed #bbb;margin:.4em 0}")


def probe_html(data: ProbeData, head: dict[str, Any], ranges: list[list[int]]) -> str:
    """The probe's page: the viewer's style, `assets/probe.js` and the payload of the tokens in `ranges` inline (JSON
    safe in a script; meta's non-finite tokens cut to those too)."""
    meta = head["meta"]
    shown = [torch.arange(start, stop) for start, stop in ranges]
    kept = set(torch.cat(shown).tolist()) if meta["page"]["note"] else None
    non_finite = {**meta["non_finite"], "tokens": [t for t in meta["non_finite"]["tokens"] if kept is None or t in kept]}
    payload = io.StringIO()
    write_payload(payload, data, {**head, "meta": {**meta, "non_finite": non_finite}}, shown)
    script = payload.getvalue()
    for raw, escaped in JSON_ESCAPES.items():
        script = script.replace(raw, escaped)
    title = html.escape(f"probe · {meta['name']} · {meta['model']}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{title}</title>\n<style>{(ASSETS / 'viewer.css').read_text(encoding='utf-8')}\n{PROBE_STYLE}</style>\n"
            "</head>\n<body>\n<header>\n  <h1 id=\"title\">Probe</h1>\n  <div id=\"run\" class=\"meta\"></div>\n</header>\n"
            f"<noscript><p class=\"note\">{NO_SCRIPT}</p></noscript>\n"
            "<main id=\"probe\"></main>\n<p id=\"status\" class=\"meta\">loading…</p>\n<div id=\"hover\" hidden></div>\n"
            f"<script>{scripts('probe.js')}\nprobe.start({script});</script>\n"
            "</body>\n</html>\n")


def write_json(path: Path, final: Path, data: ProbeData, head: dict[str, Any], pieces: list[Piece]) -> None:
    """probe.json at `path` (in the staging folder), flushed to the disk; an OSError (a full disk) names `final`."""
    try:
        with path.open("w", encoding="utf-8") as handle:
            write_payload(handle, data, head, pieces)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        exc.filename, exc.filename2 = str(final), None
        raise


def write_probe(run: ProbeRun, values: ProbeValues) -> Path:
    """probe.json (every value, written a piece of JSON_PIECE_TOKENS tokens at a time) and probe.html (as many tokens
    as a page shows, `page_ranges`) as one unit: into a staging folder beside the run's, marked last and swapped in
    (`output_folders.rewrite_folder`). Call only while holding the folder's lock: what killed runs left goes first,
    and the folder is checked again. Returns the page's path."""
    remove_stale_folders(run.folder)
    check_probe_folder(run.folder, run.text_digest, run.request.overwrite)
    data = probe_data(run, values)
    head = probe_head(run, values)
    ranges, budget = page_ranges(data, head["text_top"])
    head["meta"]["page"] = page_meta(ranges, len(run.token_ids), budget)
    if head["meta"]["page"]["note"]:
        print(f"note: {head['meta']['page']['note']}", file=sys.stderr)
    tokens = len(run.token_ids)
    pieces = [slice(start, min(start + JSON_PIECE_TOKENS, tokens)) for start in range(0, tokens, JSON_PIECE_TOKENS)]
    fields = {"text_digest": run.text_digest, "model": run.source.name, "tokens": tokens}
    with rewrite_folder(run.folder, PROBE_KIND, fields, PROBE_LEGACY, PROBE_ADVICE) as staging:
        write_json(staging / "probe.json", run.folder / "probe.json", data, head, pieces)
        atomic_write_text(staging / "probe.html", probe_html(data, head, ranges))
    return run.folder / "probe.html"
