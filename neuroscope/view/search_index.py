"""The viewer's search by token: for every token, the neurons whose token tables or examples' extreme tokens hold it.

`data/search.js` holds one `neuroscope.search(...)` call: an inverse index in CSR form over the vocabulary,
- `offsets` [vocab + 1]: token t's entries are [offsets[t], offsets[t + 1]);
- `neurons` [entry]: neuron ids (layer * d_mlp + neuron), ascending within a token;
- `where` [entry]: uint8, bit i set where the token is in SOURCES[i] of that neuron (its promoted, suppressed, ±w_in,
  ±w_gate table, or the extreme token of one of its max/min or sign-combination examples; not of its typical
  examples, which show what the neuron does everywhere);
- `sources`: the names of the bits.
It is built with numpy from the per-layer data that the viewer writes anyway (the weights' token tables and the
examples' extreme tokens); `--from_viewer` cuts it to the kept layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuroscope.recompute.examples import LIST_KINDS, TYPICAL_KINDS
from neuroscope.recompute.windows import LayerExamples
from neuroscope.view.facts import INPUT_TABLES, LayerLogitEffects
from neuroscope.view.neuron_view import ViewRun
from neuroscope.view.parts import Packed, SearchPart

EXAMPLE_SOURCES = ("max/min example", "sign-combination example")  # an example's list: max or min, or a sign combination
SOURCES = ("promoted", "suppressed", *INPUT_TABLES, *EXAMPLE_SOURCES)  # the bits of `where`
EXTREME_KINDS = 2  # the first LIST_KINDS (max, min); then the sign combinations (and the typical examples, left out)


@dataclass
class LayerTokens:
    """What the chosen neurons of one layer show by token: their token tables and their examples' extreme tokens."""

    ids: np.ndarray  # [chosen] neuron ids (layer * d_mlp + neuron)
    tables: dict[str, np.ndarray]  # name in SOURCES -> [chosen, top] token ids
    peak_tokens: np.ndarray  # [example] the token at each example's extreme position
    example_column: np.ndarray  # [example] index into `ids`
    example_kind: np.ndarray  # [example] index into LIST_KINDS

    def hits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (token, neuron id, source) of this layer, as three arrays [hit] (repeats included)."""
        tokens, neurons, sources = [], [], []
        for name, table in self.tables.items():
            tokens.append(np.asarray(table).reshape(-1))
            neurons.append(np.repeat(self.ids, np.asarray(table).shape[1]))
            sources.append(np.full(np.asarray(table).size, SOURCES.index(name)))
        tokens.append(self.peak_tokens)
        neurons.append(self.ids[self.example_column])
        sources.append(np.where(self.example_kind < EXTREME_KINDS, SOURCES.index(EXAMPLE_SOURCES[0]), SOURCES.index(EXAMPLE_SOURCES[1])))
        return tuple(np.concatenate(parts).astype(np.int64) for parts in (tokens, neurons, sources))


def viewer_layer_tokens(run: ViewRun, examples: LayerExamples, effects: LayerLogitEffects) -> LayerTokens:
    """The token tables and examples' extreme tokens of one layer of a viewer, from what it writes of that layer."""
    tables = {"promoted": effects.promoted.numpy(), "suppressed": effects.suppressed.numpy(),
              **{name: ids.numpy() for name, ids in effects.input_tokens.items()}}
    documents = run.documents
    extreme = examples.kind < LIST_KINDS.index(TYPICAL_KINDS[0])  # typical examples are what every neuron does: left out
    peaks = documents.tokens[documents.starts[documents.local(examples.doc[extreme])] + examples.position[extreme]]
    return LayerTokens(examples.layer * run.stats.d_mlp + examples.neurons, tables, peaks, examples.column[extreme],
                       examples.kind[extreme])


@dataclass
class SearchIndex:
    """The inverse index: for each token, the neurons that show it and where (see the module's docstring)."""

    offsets: np.ndarray  # [vocab + 1] int64
    neurons: np.ndarray  # [entry] neuron ids, ascending within a token
    where: np.ndarray  # [entry] uint8 bits of SOURCES

    @classmethod
    def from_hits(cls, tokens: np.ndarray, neurons: np.ndarray, sources: np.ndarray, vocab_size: int) -> SearchIndex:
        """The index of (token, neuron id, source) hits [hit]; repeats are merged, their sources or'ed."""
        key = tokens.astype(np.int64) * (int(neurons.max(initial=0)) + 1) + neurons
        order = np.argsort(key, kind="stable")
        key, bits = key[order], (1 << sources[order]).astype(np.uint8)
        first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else np.zeros(0, np.int64)
        where = np.bitwise_or.reduceat(bits, first) if len(key) else np.zeros(0, np.uint8)
        return cls(np.searchsorted(tokens[order][first], np.arange(vocab_size + 1)).astype(np.int64),
                   neurons[order][first].astype(np.int64), where.astype(np.uint8))

    @classmethod
    def of_layers(cls, layers: list[LayerTokens], vocab_size: int) -> SearchIndex:
        """The index of the chosen neurons of some layers."""
        hits = [layer.hits() for layer in layers]
        return cls.from_hits(*(np.concatenate([h[i] for h in hits]) if hits else np.zeros(0, np.int64) for i in range(3)),
                             vocab_size)

    def tokens(self) -> np.ndarray:
        """The token of each entry [entry]."""
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))

    def kept(self, keep: np.ndarray) -> SearchIndex:
        """The index of only the entries `keep` [entry] (bool), e.g. the neurons of some layers."""
        counts = np.bincount(self.tokens()[keep], minlength=len(self.offsets) - 1)
        return SearchIndex(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), self.neurons[keep], self.where[keep])

    def check(self, n_ids: int) -> None:
        """ValueError unless this is a whole index of neuron ids below `n_ids`."""
        offsets = self.offsets
        if len(offsets) < 1 or offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != len(self.neurons) or \
                len(self.where) != len(self.neurons) or ((self.neurons < 0) | (self.neurons >= n_ids)).any() or \
                (self.where >> len(SOURCES)).any():
            raise ValueError("offsets, neurons and sources do not fit together")

    def payload(self) -> SearchPart:
        """The argument of `neuroscope.search(...)` (data/search.js)."""
        return SearchPart(sources=list(SOURCES), offsets=Packed.of(self.offsets, "i4"), neurons=Packed.of(self.neurons),
                          where=Packed.of(self.where, "u1"))

    @classmethod
    def of_part(cls, part: SearchPart) -> SearchIndex:
        """The index that `payload` wrote (not checked: `check`)."""
        return cls(part.offsets.array().astype(np.int64), part.neurons.array().astype(np.int64), part.where.array().astype(np.uint8))
