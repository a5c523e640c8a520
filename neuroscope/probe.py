"""Probe a text of one's own: g, u and a of chosen neurons at every token, the neurons with the largest |a| at each
token, and the neurons that fire most on the whole text, relative to their distribution on the dataset of the
statistics (percentiles from the histogram of the activation pass), written as `probe.json` and a self-contained
`probe.html` (the viewer's style, drawn by `assets/probe.js`).

A text is one document or several (a .jsonl file: one per record); each starts with the BOS the dataset's
documents start with, and a text longer than the model's context runs in windows, each its own forward pass with
BOS first. BOS itself is run but not shown. Shapes: per-token values are [token] over the text's tokens (BOS left
out), the statistics' tables [layer neuron (bin)].

Layout: `<results>/<model>/<settings>/probe/<name>/probe.html` and `probe.json`.
"""

from __future__ import annotations

import html
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gated_core.artifacts import atomic_write_text
from gated_core.cli import check_output_location, parse_device, parse_dtype
from gated_core.errors import UserError
from gated_core.models.arch import read_arch
from gated_core.models.loading import load_hf_model, load_tokenizer
from gated_core.models.sources import ModelSource, resolve_model
from neuroscope.activations import SIGN_COMBINATIONS
from neuroscope.histogram import histogram_codes, histogram_lookup
from neuroscope.hooks import mlp_hooks, run_model
from neuroscope.neuron_sets import parse_class
from neuroscope.neuron_view import to_json, token_texts
from neuroscope.pages import ASSETS, scripts
from neuroscope.recompute import Neuron, check_tokenizer, neuron_folder, requested_neurons
from neuroscope.site import neuroscope_folder
from neuroscope.store import Statistics, load_statistics
from neuroscope.tokenization import document_start
from neuroscope.viewer import viewer_layers
from wcos_casestudies.results import ModelResults, Settings
from wcos_casestudies.section6 import stored_roles

PROBE_FOLDER = "probe"  # beside the model's `neuroscope` folder
MAX_CHOSEN = 32  # neurons coloured on one probe page
SLUG_WORDS, SLUG_CHARS = 6, 40  # the default name: the text's first words, at most this long


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


@dataclass
class ProbeValues:
    """What one pass over the text found; tokens are those of `ProbeRun.token_ids`."""

    chosen: dict[Neuron, dict[str, torch.Tensor]]  # neuron -> "g", "u", "a": [token] float32
    top_values: torch.Tensor  # [token top] float32: a of the neurons with the largest |a| at each token
    top_ids: torch.Tensor  # [token top] int64: their layer * d_mlp + neuron
    max_values: torch.Tensor  # [layer neuron] float32: the largest a over the text
    max_tokens: torch.Tensor  # [layer neuron] int64: the token where it is
    windows: list[tuple[int, int]]  # [start, stop) in token_ids of each forward pass
    window_tokens: int  # tokens per forward pass at most, BOS included
    seconds: float = 0.0  # the forward passes with their hooks


def read_documents(path: Path) -> list[str]:
    """The documents of a --file: a .txt file is one; a .jsonl file has one per line, its "text" field."""
    if path.suffix not in (".txt", ".jsonl"):
        raise UserError(f"--file {path}: give a .txt file or a .jsonl file with a \"text\" field per line")
    if not path.is_file():
        raise UserError(f"--file {path}: no such file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"--file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
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
    """Refuse a text with nothing but white space."""
    if not documents or not any(text.strip() for text in documents):
        raise UserError("the text is empty; give some text with --text, --file or on stdin")


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
    folder = results.folder / PROBE_FOLDER / (request.name or default_name(" ".join(request.documents)))
    check_output_location(folder, "--results_dir")
    allowed = allowed_neurons(request, results, arch.n_layers, arch.d_mlp)
    tokenizer = load_tokenizer(source)
    token_ids, doc_starts = tokenize_documents(tokenizer, request.documents)
    run = ProbeRun(request, source, results, folder, tokenizer, neurons, allowed, token_ids, doc_starts,
                   document_start(tokenizer, True)["bos_token_id"], device, None, stats)
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
    candidates and the running maximum of a, all of the window's text tokens (BOS, when first, left out)."""

    run: ProbeRun
    skip: int  # 1 when the window starts with BOS
    start: int  # the window's first text token in token_ids
    max_values: torch.Tensor  # [layer neuron], updated in place
    max_tokens: torch.Tensor
    chosen: dict[Neuron, dict[str, list[torch.Tensor]]]
    candidates: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # ([pos k] a, [pos k] ids)

    def __call__(self, layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        g, u, a = (t[0, self.skip:] for t in (g, u, a))  # [pos neuron]
        a = a.float()
        for neuron in (n for lay, n in self.run.neurons if lay == layer):
            for key, values in (("g", g), ("u", u), ("a", a)):
                self.chosen[(layer, neuron)][key].append(values[:, neuron].float().cpu())
        allowed = self.run.allowed[layer]
        count = int(allowed.sum())
        if count == 0:
            return
        scores = a.abs()
        if count < len(allowed):
            scores.masked_fill_(~allowed.to(a.device), -1.0)
        index = scores.topk(min(self.run.request.top, count), dim=-1).indices  # [pos k]
        self.candidates.append((a.gather(-1, index).cpu(), (index + layer * a.shape[-1]).cpu()))
        best, where = a.max(dim=0)
        better = best.cpu() > self.max_values[layer]
        self.max_values[layer] = torch.where(better, best.cpu(), self.max_values[layer])
        self.max_tokens[layer] = torch.where(better, where.cpu() + self.start, self.max_tokens[layer])

    def top(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's neurons with the largest |a| at each token, over every layer: a and ids, [pos k]."""
        values = torch.cat([v for v, _ in self.candidates], dim=-1)
        ids = torch.cat([i for _, i in self.candidates], dim=-1)
        order = values.abs().topk(min(k, values.shape[-1]), dim=-1).indices
        return values.gather(-1, order), ids.gather(-1, order)


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
    layers = sorted({layer for layer, _ in run.neurons} | set(torch.nonzero(run.allowed.any(dim=1)).flatten().tolist()))
    top_values, top_ids = [], []
    started = time.perf_counter()
    for start, stop in windows:
        ids = torch.tensor([([run.bos_id] if skip else []) + run.token_ids[start:stop]], device=run.device)
        capture = WindowCapture(run, skip, start, max_values, max_tokens, chosen)
        with mlp_hooks(model, capture, layers, stop_after=layers[-1]):
            run_model(model, ids, torch.ones_like(ids))
        values, neuron_ids = capture.top(run.request.top)
        top_values.append(values)
        top_ids.append(neuron_ids)
    seconds = time.perf_counter() - started
    joined = {neuron: {key: torch.cat(parts) for key, parts in values.items()} for neuron, values in chosen.items()}
    return ProbeValues(joined, torch.cat(top_values), torch.cat(top_ids), max_values, max_tokens, windows, window, seconds)


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
    layers that holds its layer (so that a viewer of a few layers, which may be shared, is preferred to the whole one)."""
    pages = neuroscope_folder(run.results)
    viewers = sorted((len(layers), folder.name, layers) for folder in pages.glob("*/") if (folder / "viewer.html").is_file()
                     for layers in [viewer_layers(folder)])
    links = {}
    for name in sorted(names):
        layer, neuron = map(int, name.split("."))
        if (neuron_folder(pages, (layer, neuron)) / "vis.html").is_file():
            links[name] = f"../../neuroscope/L{layer}/N{neuron}/vis.html"
            continue
        holder = next((folder for _, folder, layers in viewers if layer in layers), None)
        if holder is not None:
            links[name] = f"../../neuroscope/{holder}/viewer.html#{name}"
    return links


def finite(values: torch.Tensor) -> list[float | None]:
    """A tensor's values as JSON numbers, None for NaN."""
    return [None if value != value else value for value in values.tolist()]


def whole_text_top(run: ProbeRun, values: ProbeValues) -> list[dict[str, Any]]:
    """The allowed neurons that fire most on the text: with a histogram, by the percentile of their largest a among
    the dataset's activations (then by how far it passes the dataset's largest a); without, by their largest a."""
    d_mlp = run.allowed.shape[1]
    best = values.max_values.masked_fill(~run.allowed, -torch.inf)
    stats = run.stats
    if stats is None or stats.histogram is None:
        order = best.flatten().topk(min(run.request.top, int(run.allowed.sum()))).indices
        percentiles = torch.full((len(order),), torch.nan, dtype=torch.float64)
    else:
        percentile = histogram_percentiles(stats.histogram, best.clamp_min(-3e38)[..., None])[..., 0]
        over = best / stats.top_values[..., 0].float().abs().clamp_min(1e-12)
        key = torch.stack([percentile.masked_fill(~run.allowed, -1.0).flatten(), over.double().flatten()], dim=1)
        order = torch.tensor(top_by_keys(key, min(run.request.top, int(run.allowed.sum()))), dtype=torch.long)
        percentiles = percentile.flatten()[order]
    rows = []
    for flat, percentile in zip(order.tolist(), finite(percentiles)):
        layer, neuron = divmod(flat, d_mlp)
        row = {"neuron": neuron_name(layer, neuron), "a": float(values.max_values[layer, neuron]),
               "token": int(values.max_tokens[layer, neuron]), "percentile": percentile}
        if stats is not None:
            row["dataset_max"] = float(stats.top_values[layer, neuron, 0])
        rows.append(row)
    return rows


def top_by_keys(key: torch.Tensor, k: int) -> list[int]:
    """The rows of `key` [n 2] with the largest first key, ties broken by the largest second key: the first k."""
    import numpy as np

    keys = key.numpy()
    return np.lexsort((-keys[:, 1], -keys[:, 0]))[:k].tolist()


def chosen_payload(run: ProbeRun, values: ProbeValues) -> dict[str, dict[str, Any]]:
    """g, u and a of every chosen neuron at every token, the sign combination of (g, u) (an index into
    SIGN_COMBINATIONS) and, with a histogram, the percentile of a on the dataset."""
    payload = {}
    for (layer, neuron), found in values.chosen.items():
        g, u = found["g"], found["u"]
        entry: dict[str, Any] = {key: found[key].tolist() for key in ("g", "u", "a")}
        entry["combination"] = (2 * (g <= 0).long() + (u <= 0).long()).tolist()
        if run.stats is not None and run.stats.histogram is not None:
            entry["percentile"] = finite(histogram_percentiles(run.stats.histogram[layer, neuron], found["a"]))
        payload[neuron_name(layer, neuron)] = entry
    return payload


def probe_payload(run: ProbeRun, values: ProbeValues) -> dict[str, Any]:
    """What probe.json holds and probe.html draws: tokens, the chosen neurons' values, each token's top neurons by
    |a| ([[name, a], ...] per token), the whole text's top neurons, the neurons' links and the run."""
    d_mlp = run.allowed.shape[1]
    top = [[[neuron_name(*divmod(int(i), d_mlp)), float(a)] for a, i in zip(row_a, row_i)]
           for row_a, row_i in zip(values.top_values.tolist(), values.top_ids.tolist())]
    text_top = whole_text_top(run, values)
    names = {neuron_name(*n) for n in run.neurons} | {name for row in top for name, _ in row} | {r["neuron"] for r in text_top}
    stats = run.stats
    meta = {"model": run.source.name, "name": run.folder.name, "tokens": len(run.token_ids), "documents": run.doc_starts,
            "windows": [list(w) for w in values.windows], "window_tokens": values.window_tokens,
            "bos": token_texts(run.tokenizer, [run.bos_id])[0] if run.bos_id is not None else None,
            "dtype": str(run.dtype).removeprefix("torch."), "top": run.request.top, "caption": run.results.caption,
            "filters": {"layers": run.request.layers, "classes": run.request.classes, "roles": run.request.roles},
            "dataset": Path(stats.meta.dataset).name if stats is not None else None,
            "dataset_tokens": int(stats.meta.tokens) if stats is not None else None,
            "sign_combinations": list(SIGN_COMBINATIONS), "notes": run.notes}
    return {"tokens": token_texts(run.tokenizer, run.token_ids), "neurons": chosen_payload(run, values), "top": top,
            "text_top": text_top, "links": neuron_links(run, names), "meta": meta}


NO_SCRIPT = "This page needs JavaScript: it draws the text from the data it carries (no network needed)."
PROBE_STYLE = (".controls{display:flex;flex-wrap:wrap;gap:.5em 1.5em;align-items:center;margin:.6em 0}"
               ".probe-text .t{cursor:pointer} .t.picked{outline:2px solid #000}"
               ".doc-break{display:block;border-top:1px dashed #bbb;margin:.4em 0}")


def probe_html(payload: dict[str, Any]) -> str:
    """The probe's page: the viewer's style, `assets/probe.js` and the payload inline (JSON safe in a script)."""
    title = html.escape(f"probe · {payload['meta']['name']} · {payload['meta']['model']}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{title}</title>\n<style>{(ASSETS / 'viewer.css').read_text(encoding='utf-8')}\n{PROBE_STYLE}</style>\n"
            "</head>\n<body>\n<header>\n  <h1 id=\"title\">Probe</h1>\n  <div id=\"run\" class=\"meta\"></div>\n</header>\n"
            f"<noscript><p class=\"note\">{NO_SCRIPT}</p></noscript>\n"
            "<main id=\"probe\"></main>\n<p id=\"status\" class=\"meta\">loading…</p>\n<div id=\"hover\" hidden></div>\n"
            f"<script>{scripts('probe.js')}\nprobe.start({to_json(payload)});</script>\n"
            "</body>\n</html>\n")


def write_probe(run: ProbeRun, payload: dict[str, Any]) -> Path:
    """probe.json and probe.html in the run's folder, each written atomically; returns the page's path."""
    atomic_write_text(run.folder / "probe.json", json.dumps(payload, allow_nan=False))
    page = run.folder / "probe.html"
    atomic_write_text(page, probe_html(payload))
    return page
