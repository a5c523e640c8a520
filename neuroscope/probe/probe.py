"""Probe a text of one's own (`f_probe.py`): the probe's output folder, `probe.json` (every value) and a
self-contained `probe.html` (`templates/probe.html`: the viewer's style, drawn by `assets/probe.js`), written as one
unit. The stage's modules: `request` (the request, the text read and checked, the run opened), `forward` (the pass
and the percentiles), `payload` (the JSON), and this one (the page and the writing); the entry points of the
others (`ProbeRequest`, `open_probe`, `probe_pass`, `default_name`, `histogram_percentiles`) stay importable from
here too, as before the split.

Layout: `<results>/<model>/<settings>/probe/<name>/probe.html`, `probe.json` and the folder's marker
(`gated_core.output_folders`: kind "probe", the digest of the text). The folder is written as one unit (staged
beside it, marked last, swapped in) under its lock.

A long text: probe.json holds every value (written a piece at a time), probe.html only as many tokens as a browser
lays out (PAGE_MAX_TOKENS, PAGE_MAX_BYTES): windows around the strongest tokens and the start of the text, which
the page and a note on stderr say.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

import torch

from gated_core.artifacts import atomic_write_text, remove_stale_folders
from gated_core.html import Markup, render
from gated_core.output_folders import rewrite_folder
from neuroscope.probe.forward import ProbeValues, rank_scores
from neuroscope.probe.forward import histogram_percentiles as histogram_percentiles
from neuroscope.probe.forward import probe_pass as probe_pass
from neuroscope.probe.payload import Piece, ProbeData, probe_data, probe_head, write_payload
from neuroscope.probe.request import PROBE_ADVICE, PROBE_KIND, PROBE_LEGACY, ProbeRun, check_probe_folder
from neuroscope.probe.request import ProbeRequest as ProbeRequest
from neuroscope.probe.request import default_name as default_name
from neuroscope.probe.request import open_probe as open_probe
from neuroscope.view.html import asset, scripts
from neuroscope.view.neuron_view import JSON_ESCAPES

JSON_PIECE_TOKENS = 1 << 16  # tokens of probe.json turned into text at once (its memory stays that of a piece)
# the page shows at most this many tokens and about this much data (Chromium lays out a 10 MB text's page of 310 MB
# no more): beyond, windows of the text (probe.json holds every value)
PAGE_MAX_TOKENS = 100_000
PAGE_MAX_BYTES = 32 << 20
PAGE_SAMPLE_TOKENS = 1024  # tokens whose page data give the bytes a token takes on the page
PAGE_CONTEXT = 32  # tokens shown on each side of a strong token in a window of the page
STRONG_PER_NEURON = 5  # strongest tokens of each chosen neuron with a window on the page


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
    return render("neuroscope.probe", "probe.html", name=meta["name"], model=meta["model"], style=Markup(asset("viewer.css")),
                  script=Markup(scripts("probe.js")), payload=Markup(script))


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
