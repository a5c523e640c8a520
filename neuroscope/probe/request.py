"""The probe's request and its checks before any work (`f_probe.py`): the text read (a --file, stdin) and checked,
the neurons, the filters (--layers, --classes, --roles), the statistics and the output folder, then the text
tokenized (`open_probe`). The model is not loaded here.

A text is one document or several (a .jsonl file: one per record); each starts with the BOS the dataset's documents
start with. Layout: `<results>/<model>/<settings>/probe/<name>/`; a folder of another text is replaced only with
--overwrite (with the default name the probe goes beside it, the name followed by the text's digest), and never a
link or a folder of the user's.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gated_core.cli import check_output_location, check_regular_file, parse_device, parse_dtype
from gated_core.errors import UserError
from gated_core.fingerprint import content_digest
from gated_core.models.arch import read_arch
from gated_core.models.loading import load_tokenizer
from gated_core.models.sources import ModelSource, resolve_model
from gated_core.output_folders import check_output_folder, folder_marker, legacy_pattern
from gated_core.results_layout import PROBE_FOLDER
from neuroscope.activation_pass.store import Statistics, load_statistics
from neuroscope.classes.neuron_sets import parse_class
from neuroscope.data.tokenization import document_start
from neuroscope.recompute.examples import Neuron, check_tokenizer, requested_neurons
from neuroscope.view.checksums import LONE_SURROGATE
from wcos_casestudies.results import ModelResults, Settings
from wcos_casestudies.section6 import read_roles

PROBE_KIND = "probe"  # the kind of a probe's folder (its marker, gated_core.output_folders)
# what the previous version wrote in a probe folder (no marker): the two files, and the temporaries of their writes
PROBE_LEGACY = legacy_pattern(r"probe\.(json|html)")
PROBE_ADVICE = "choose another --name, or move that folder away yourself"
DIGEST_CHARS = 8  # hex digits of the text's digest after the default name, where a probe of another text has it
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
        stored = read_roles(results)
        masks = stored.roles if stored else {}
        missing = [role for role in request.roles if role not in masks]
        if missing:
            known = ", ".join(masks) if masks else "none (run wcos_casestudies/casestudies.py for this model first)"
            raise UserError(f"--roles {missing[0]}: no such role in roles.pt; roles: {known}")
        allowed &= torch.stack([masks[role] for role in request.roles]).any(dim=0)
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
