"""The viewer's search by token, ranked: for every token, each neuron that shows it, where, and how strongly.

A hit is one (token, neuron, source): the token is in the neuron's SOURCES[source], one of
- the extreme token of one of its max/min, sign-combination or typical examples;
- its token tables: promoted or suppressed (w_out · W_U), ±w_in · W_U, ±w_gate · W_U, the embedding's connection
  lists (gate_embed, linear_embed: virtual weight of the token's W_E row into the gate or the linear input).
Each hit carries its value (the activation a at the token, or the weight of the table) and its strength, the value
relative to the neuron's own largest of its kind, a number in [0, 1] comparable across neurons:
- examples: |a| / max(|max a|, |min a|) of the neuron on the dataset (the index's max and min);
- promoted, suppressed: |w_out · W_U[t]| / max over the vocabulary of |w_out · W_U| (the layer's logit_low, logit_high);
- ±w_in, ±w_gate: |w · W_U[t]| / max(|first of +w|, |first of -w|), the largest over the vocabulary both ways; 0
  (value NaN) in a viewer written before the tables' values were kept;
- embedding connections: |virtual weight| / the largest |virtual weight| of the neuron's shown list of that kind.
A token met several times by one neuron and source (three max examples at " with") is one hit, its strongest.
The sources fall in GROUP_NAMES (activation, output weight, input weight, embedding connection), listed one at a time.

The hits are held in runs (token, group), each strongest first (ties: by source in SOURCES' order, then neuron id), so
that a search ranks by strength, then source, token and neuron. Each run's TOP_HITS strongest hits, a page of the
search, are written apart from the rest: the first page of any search (a group's, or every group's) is among them.
- `data/top_<shard>.js` (`parts.TopPart`, shards of at most TOP_SHARD_HITS hits, small): those hits, how many hits
  each run has in all (`counts`) and how many neurons each token's hits are of (`pairs`): all that a search's first
  page and its counts need, so that a search loads only small files;
- `data/search_<shard>.js` (`parts.SearchPart`, shards of at most SHARD_HITS hits): the rest, loaded for later pages.
Both are shards of consecutive tokens (a token with more hits is a shard of its own; the meta's `top_shards` and
`search_shards` list each shard's first token), in CSR form over its runs: `offsets` [tokens * groups + 1]; per hit
`neurons`, `source`, `value` (float16), `strength` (float16), `doc`, `position` (where an example's token is: dataset
document, position in it; -1 and 0 for a table hit, so that the page shows it in context); `sources`, `groups`: the
names of the sources and the group of each.
It is built from the layer parts the viewer writes (`layer_hits`), so that a viewer's own files rebuild it
(`viewer_refresh`); `--from_viewer` cuts it to the kept layers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from neuroscope.recompute.examples import LIST_KINDS, TYPICAL_KINDS
from neuroscope.view.facts import INPUT_TABLES
from neuroscope.view.parts import ExampleArrays, IndexPart, LayerPart, Packed, SearchPart, TopPart
from wcos_casestudies.connections import EMBED_KINDS

EXAMPLE_SOURCES = ("max/min example", "sign-combination example", "typical example")  # an example's list kind
OUTPUT_TABLES = ("promoted", "suppressed")
SOURCES = (*EXAMPLE_SOURCES, *OUTPUT_TABLES, *INPUT_TABLES, *EMBED_KINDS)  # in the order that breaks ties: activations first
GROUP_NAMES = ("activation", "output weight", "input weight", "embedding connection")  # in SOURCES' order
GROUPS = {**{s: "activation" for s in EXAMPLE_SOURCES}, **{s: "output weight" for s in OUTPUT_TABLES},
          **{s: "input weight" for s in INPUT_TABLES}, **{s: "embedding connection" for s in EMBED_KINDS}}
GROUP_OF = np.array([GROUP_NAMES.index(GROUPS[s]) for s in SOURCES])  # [source] its group
TOP_HITS = 100  # hits of a run in the top files: a page of the search (assets/viewer.js lists meta.search_top a page)
TOP_SHARD_HITS = 1 << 15  # hits a top file at most (~0.6 MiB of text), unless one token has more
SHARD_HITS = 1 << 18  # hits a file of the rest at most (~5 MiB of text), unless one token has more
EXTREME_KINDS = 2  # the first LIST_KINDS (max, min); then the sign combinations, then the typical examples


@dataclass
class Hits:
    """(token, neuron id, source) hits [hit] with their value, strength (float16-rounded) and, for examples, where
    the token is (dataset document, position in it; -1, 0 for a table hit)."""

    token: np.ndarray
    neuron: np.ndarray
    source: np.ndarray
    value: np.ndarray
    strength: np.ndarray
    doc: np.ndarray
    position: np.ndarray

    @classmethod
    def of(cls, token, neuron, source, value, scale, doc=None, position=None) -> Hits:
        """Hits of arrays [hit] (a scalar `source` for all), strength |value| / scale (0 where the scale is 0 or the
        value unknown), rounded to float16 as the page reads it."""
        token = np.asarray(token, np.int64).reshape(-1)
        value = np.asarray(value, np.float64).reshape(-1)
        scale = np.broadcast_to(np.asarray(scale, np.float64), value.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            strength = np.where((scale > 0) & np.isfinite(value), np.abs(value) / np.where(scale > 0, scale, 1), 0.0)
        size = len(token)
        return cls(token, np.broadcast_to(np.asarray(neuron, np.int64), (size,)).copy(),
                   np.broadcast_to(np.asarray(source, np.int64), (size,)).copy(), value,
                   strength.astype(np.float16).astype(np.float64),
                   np.full(size, -1, np.int64) if doc is None else np.asarray(doc, np.int64),
                   np.zeros(size, np.int64) if position is None else np.asarray(position, np.int64))

    @classmethod
    def joined(cls, parts: list[Hits]) -> Hits:
        """The hits of all `parts`, one after the other."""
        if not parts:
            return cls.of(np.zeros(0), np.zeros(0), 0, np.zeros(0), 1.0)
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def rows(self, keep: np.ndarray) -> Hits:
        """The hits `keep` (a mask or indices)."""
        return Hits(*(getattr(self, f.name)[keep] for f in fields(self)))


def table_hits(ids: np.ndarray, tokens: Packed, values: Packed | None, scale: np.ndarray, source: str) -> Hits:
    """The hits of one token table [chosen top] (flat), its values (None: unknown) and each neuron's scale [chosen]."""
    table = tokens.array().astype(np.int64).reshape(len(ids), -1)
    weights = np.full(table.shape, np.nan) if values is None else values.array().reshape(table.shape)
    return Hits.of(table, np.repeat(ids, table.shape[1]), SOURCES.index(source), weights, np.repeat(scale, table.shape[1]))


def largest_both_ways(plus: Packed | None, minus: Packed | None, chosen: int) -> np.ndarray:
    """max(|first of +table|, |first of -table|) per neuron [chosen]: the largest |w · W_U| over the vocabulary."""
    found = [np.abs(p.array().astype(np.float64).reshape(chosen, -1)[:, 0]) for p in (plus, minus) if p is not None]
    return np.maximum.reduce(found) if found else np.zeros(chosen)


def weight_hits(part: LayerPart, ids: np.ndarray) -> list[Hits]:
    """The hits of a layer part's token tables: promoted, suppressed, ±w_in, ±w_gate."""
    chosen = len(ids)
    logit_scale = np.maximum(np.abs(part.logit_low.array()), np.abs(part.logit_high.array())).astype(np.float64)
    found = [table_hits(ids, part.promoted, part.promoted_values, logit_scale, "promoted"),
             table_hits(ids, part.suppressed, part.suppressed_values, logit_scale, "suppressed")]
    values = part.input_values or {}
    for name, tokens in part.inputs.items():
        sign_free = name[1:]
        scale = largest_both_ways(values.get("+" + sign_free), values.get("-" + sign_free), chosen)
        found.append(table_hits(ids, tokens, values.get(name), scale, name))
    return found


def connection_hits(part: LayerPart, ids: np.ndarray) -> list[Hits]:
    """The hits of the embedding's connection lists (token ids, virtual weights [chosen shown]; -1: none)."""
    lists = part.connections
    found = []
    for kind in EMBED_KINDS:
        if lists is None or kind not in lists.kinds or lists.kinds[kind].virtual_weight is None:
            continue
        other = lists.kinds[kind].other.array().astype(np.int64).reshape(len(ids), -1)
        weight = lists.kinds[kind].virtual_weight.array().astype(np.float64).reshape(other.shape)
        scale = np.where(other >= 0, np.abs(weight), 0).max(axis=1, initial=0.0)
        keep = other >= 0
        found.append(Hits.of(other[keep], np.repeat(ids, other.shape[1]).reshape(other.shape)[keep], SOURCES.index(kind),
                             weight[keep], np.repeat(scale, other.shape[1]).reshape(other.shape)[keep]))
    return found


@dataclass(frozen=True)
class DocumentTokens:
    """The tokens of the documents a viewer carries [token], where each starts [document + 1], and which dataset
    documents they are ([document], ascending; None: all, in order)."""

    tokens: np.ndarray
    starts: np.ndarray
    ids: np.ndarray | None = None

    def at(self, docs: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The token at `positions` [hit] of dataset documents `docs` [hit]."""
        rows = docs if self.ids is None else np.searchsorted(self.ids, docs)
        return self.tokens[self.starts[rows] + positions]


def example_hits(examples: ExampleArrays, ids: np.ndarray, peak: np.ndarray, documents: DocumentTokens) -> Hits:
    """The hits of a layer part's examples: each max/min, sign-combination or typical example's extreme token, its a
    relative to the neuron's largest |a| `peak` [chosen]."""
    kinds = len(LIST_KINDS)
    list_offsets = examples.list_offsets.array().astype(np.int64)
    slot = np.repeat(np.arange(len(list_offsets) - 1), np.diff(list_offsets))  # [example] column * kinds + kind
    column, kind = slot // kinds, slot % kinds
    window = examples.window_offsets.array().astype(np.int64)[column] + examples.example_window.array()
    doc = examples.window_doc.array().astype(np.int64)[window]
    position = examples.window_start.array().astype(np.int64)[window] + examples.example_peak.array()
    sources = np.select([kind < EXTREME_KINDS, kind < LIST_KINDS.index(TYPICAL_KINDS[0])],
                        [SOURCES.index(s) for s in EXAMPLE_SOURCES[:2]], SOURCES.index(EXAMPLE_SOURCES[2]))
    return Hits.of(documents.at(doc, position), ids[column], sources, examples.example_value.array(), peak[column], doc, position)


def index_peaks(index: IndexPart, ids: np.ndarray) -> np.ndarray:
    """Each neuron's largest |a| on the dataset, max(|max|, |min|) of its index row, for neuron ids [chosen]."""
    rows = np.searchsorted(index.ids.array(), ids)
    return np.maximum(np.abs(index.max.array()[rows]), np.abs(index.min.array()[rows])).astype(np.float64)


def layer_hits(part: LayerPart, layer: int, d_mlp: int, peak: np.ndarray, documents: DocumentTokens) -> Hits:
    """Every hit of the chosen neurons of one layer part (a layer, or a chunk of one); `peak` [chosen]: each neuron's
    largest |a| on the dataset."""
    ids = layer * d_mlp + part.examples.neurons.array().astype(np.int64)
    return Hits.joined([*weight_hits(part, ids), *connection_hits(part, ids),
                        example_hits(part.examples, ids, np.asarray(peak, np.float64), documents)])


def strongest_first(hits: Hits) -> Hits:
    """One hit per (token, neuron, source), its strongest (then its first), ordered by token, group, then strength
    (descending), source and neuron."""
    order = np.lexsort((-hits.strength, hits.source, hits.neuron, hits.token))
    hits = hits.rows(order)
    same = (hits.token[1:] == hits.token[:-1]) & (hits.neuron[1:] == hits.neuron[:-1]) & (hits.source[1:] == hits.source[:-1])
    hits = hits.rows(np.concatenate([[True], ~same]) if len(hits.token) else np.zeros(0, bool))
    return hits.rows(np.lexsort((hits.neuron, hits.source, -hits.strength, GROUP_OF[hits.source], hits.token)))


def pairs_of(hits: Hits, vocab_size: int) -> np.ndarray:
    """How many neurons each token's hits are of [vocab]."""
    width = int(hits.neuron.max()) + 1 if len(hits.neuron) else 1
    return np.bincount(np.unique(hits.token * width + hits.neuron) // width, minlength=vocab_size)


@dataclass
class SearchIndex:
    """The ranked search by token: the hits in CSR form over the runs (token, group) (see the module's docstring)."""

    offsets: np.ndarray  # [vocab * groups + 1] int64: run token * len(GROUP_NAMES) + group
    hits: Hits  # [entry] by token, group, strongest first

    @classmethod
    def of_hits(cls, hits: Hits, vocab_size: int) -> SearchIndex:
        """The index of some hits (repeats merged: `strongest_first`)."""
        return cls.of_ranked(strongest_first(hits), vocab_size)

    @classmethod
    def of_ranked(cls, hits: Hits, vocab_size: int) -> SearchIndex:
        """The index of hits already in its order."""
        runs = hits.token * len(GROUP_NAMES) + GROUP_OF[hits.source]
        return cls(np.searchsorted(runs, np.arange(vocab_size * len(GROUP_NAMES) + 1)).astype(np.int64), hits)

    @property
    def vocab_size(self) -> int:
        return (len(self.offsets) - 1) // len(GROUP_NAMES)

    def kept(self, keep: np.ndarray) -> SearchIndex:
        """The index of only the entries `keep` [entry] (bool), e.g. the neurons of some layers."""
        return SearchIndex.of_ranked(self.hits.rows(keep), self.vocab_size)

    def split(self) -> tuple[SearchIndex, SearchIndex]:
        """The index of each run's TOP_HITS strongest hits, and that of the rest."""
        counts = np.diff(self.offsets)
        rank = np.arange(len(self.hits.token)) - np.repeat(self.offsets[:-1], counts)
        return self.kept(rank < TOP_HITS), self.kept(rank >= TOP_HITS)

    def check(self, n_ids: int) -> None:
        """ValueError unless this is a whole index of neuron ids below `n_ids`."""
        offsets, hits = self.offsets, self.hits
        if len(offsets) < 1 or offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != len(hits.neuron) or \
                ((hits.neuron < 0) | (hits.neuron >= n_ids)).any() or ((hits.source < 0) | (hits.source >= len(SOURCES))).any():
            raise ValueError("offsets, neurons and sources do not fit together")

    def shards(self, most: int) -> list[int]:
        """The first token of each shard: consecutive tokens of at most `most` hits together (a token of more alone)."""
        counts, firsts, held = np.diff(self.offsets[::len(GROUP_NAMES)]), [0], 0
        for token, count in enumerate(counts.tolist()):
            if held and held + count > most:
                firsts.append(token)
                held = 0
            held += count
        return firsts

    def payload(self, first: int, stop: int) -> SearchPart:
        """The argument of `neuroscope.search(shard, ...)`: the hits of tokens [first, stop) (a `data/search_<shard>.js`)."""
        groups = len(GROUP_NAMES)
        runs = self.offsets[first * groups:stop * groups + 1]
        hits = self.hits.rows(slice(int(runs[0]), int(runs[-1])))
        return SearchPart(first=first, sources=list(SOURCES), groups=[GROUPS[s] for s in SOURCES], offsets=Packed.of(runs - runs[0]),
                          neurons=Packed.of(hits.neuron), source=Packed.of(hits.source, "u1"), value=Packed.of(hits.value, "f2"),
                          strength=Packed.of(hits.strength, "f2"), doc=Packed.of(hits.doc, "i4"), position=Packed.of(hits.position))

    def top_payload(self, whole: SearchIndex, pairs: np.ndarray, first: int, stop: int) -> TopPart:
        """The argument of `neuroscope.top(shard, ...)` of this top index of `whole`: its hits of tokens [first, stop),
        with the counts of the whole index's runs and the `pairs` [vocab] of its tokens."""
        counts = np.diff(whole.offsets[first * len(GROUP_NAMES):stop * len(GROUP_NAMES) + 1])
        return TopPart(**vars(self.payload(first, stop)), counts=Packed.of(counts), pairs=Packed.of(pairs[first:stop]))


@dataclass(frozen=True)
class SearchFiles:
    """What `data/top_<shard>.js` and `data/search_<shard>.js` hold: the parts (in order) and the meta's firsts."""

    tops: list[TopPart]
    rests: list[SearchPart]

    @classmethod
    def of_index(cls, index: SearchIndex) -> SearchFiles:
        """The files of an index: TOP_SHARD_HITS top hits a file, SHARD_HITS others."""
        top, rest = index.split()
        pairs = pairs_of(index.hits, index.vocab_size)
        return cls([top.top_payload(index, pairs, first, stop) for first, stop in spans(top.shards(TOP_SHARD_HITS), index.vocab_size)],
                   [rest.payload(first, stop) for first, stop in spans(rest.shards(SHARD_HITS), index.vocab_size)])

    def index(self) -> SearchIndex:
        """The index these files hold; ValueError where they are not exactly the files that index writes (consecutive
        shards of this version's sources, each run's strongest hits in its top file, the counts and pairs right)."""
        hits, vocab_size = Hits.joined([part_hits(part) for part in [*self.tops, *self.rests]]), None
        for parts in (self.tops, self.rests):
            firsts = [part.first for part in parts]
            if not parts or firsts[0] != 0 or any(part.sources != list(SOURCES) for part in parts):
                raise ValueError(f"shards of sources {parts[0].sources if parts else []} from tokens {firsts}, not of {list(SOURCES)}")
            size = firsts[-1] + (len(parts[-1].offsets.array()) - 1) // len(GROUP_NAMES)
            if vocab_size not in (None, size):
                raise ValueError(f"top shards of {vocab_size} tokens, the others of {size}")
            vocab_size = size
        index = SearchIndex.of_hits(hits, vocab_size)
        if SearchFiles.of_index(index) != self:
            raise ValueError("its shards are not those of the hits they hold (counts, order or split)")
        return index

    @property
    def firsts(self) -> tuple[list[int], list[int]]:
        """The first token of each top shard, and of each other shard (the meta's top_shards, search_shards)."""
        return [part.first for part in self.tops], [part.first for part in self.rests]


def spans(firsts: list[int], vocab_size: int) -> list[tuple[int, int]]:
    """Each shard's tokens [first, stop) of its first tokens."""
    return list(zip(firsts, [*firsts[1:], vocab_size]))


def part_hits(part: SearchPart) -> Hits:
    """The hits that a shard holds; ValueError where its arrays do not fit together."""
    runs = part.offsets.array().astype(np.int64)
    arrays = [part.neurons, part.source, part.value, part.strength, part.doc, part.position]
    if len(runs) < 1 or (len(runs) - 1) % len(GROUP_NAMES) or runs[0] != 0 or (np.diff(runs) < 0).any():
        raise ValueError("its offsets are not those of whole tokens")
    if len({int(runs[-1]), *(len(a.array()) for a in arrays)}) != 1:
        raise ValueError("its arrays are not all of one length per hit")
    token = part.first + np.repeat(np.arange(len(runs) - 1), np.diff(runs)) // len(GROUP_NAMES)
    neuron, source, value, strength, doc, position = (a.array() for a in arrays)
    if ((source < 0) | (source >= len(SOURCES))).any():
        raise ValueError("a hit of a source it does not have")
    return Hits(token, neuron.astype(np.int64), source.astype(np.int64), value.astype(np.float64), strength.astype(np.float64),
                doc.astype(np.int64), position.astype(np.int64))
