"""Sets of neurons to compare or ablate: whole IO classes, functional roles, fixed-size samples of
either, and same-layer random baselines that match a set's per-layer counts.

A set is a sorted [k 2] int64 tensor of (layer, neuron) pairs with a name. The same-layer random
baseline of a set draws, in every layer, as many neurons uniformly at random (without replacement)
from all neurons of that layer as the set has there, as the "Weakening Neurons" follow-up of
Gerstner & Schütze does. Every draw comes from a generator seeded by the seed and the set's name,
so a rerun draws the same neurons.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from gated_core.errors import UserError
from gated_core.naming import canonical
from wcos_casestudies.constants import CLASS_NAMES, CLASS_WORDS


@dataclass(frozen=True)
class NeuronSet:
    """A named set of neurons; `stands_for` names the set a random baseline or sample is drawn for."""

    name: str
    neurons: torch.Tensor  # [k 2] int64 (layer, neuron), sorted by layer then neuron
    kind: str  # "class", "role", "sample" or "random"
    stands_for: str | None = None
    seed: int | None = None

    def __len__(self) -> int:
        return int(self.neurons.shape[0])

    def layer_counts(self, n_layers: int) -> torch.Tensor:
        """Neurons of the set in each layer: [layer] int64."""
        return torch.bincount(self.neurons[:, 0], minlength=n_layers)

    def by_layer(self) -> dict[int, torch.Tensor]:
        """layer -> the set's neuron indices in that layer ([k_layer] int64), for the layers it touches."""
        return {int(layer): self.neurons[self.neurons[:, 0] == layer, 1] for layer in self.neurons[:, 0].unique()}


def parse_class(word: str) -> int:
    """The class code of a command-line class name (spaces or underscores; the paper's words or the follow-up's:
    conditional_weakening is conditional_depletion), else a UserError listing them all."""
    names = list(CLASS_WORDS)  # the class names as command-line words (`conditional_depletion`)
    normalised = canonical(word.strip().lower().replace(" ", "_").replace("-", "_"))
    if normalised not in names:
        raise UserError(f"unknown IO class {word!r}; valid classes: {', '.join(names)} (or with strengthening, weakening "
                        "for enrichment, depletion)")
    return names.index(normalised)


def neurons_of_mask(mask: torch.Tensor) -> torch.Tensor:
    """(layer, neuron) pairs of the True entries of a [layer neuron] mask: [k 2] int64, sorted."""
    return torch.nonzero(mask).long()


def class_set(categories: torch.Tensor, code: int) -> NeuronSet:
    """All neurons of one IO class; `categories` is [layer neuron] of class codes."""
    return NeuronSet(CLASS_NAMES[code], neurons_of_mask(categories == code), kind="class")


def role_set(roles: dict[str, torch.Tensor], role: str) -> NeuronSet:
    """All neurons of one functional role of casestudies.py (`roles`: name -> [layer neuron] bool)."""
    if role not in roles:
        raise UserError(f"unknown role {role!r}; roles.pt has: {', '.join(roles)}")
    return NeuronSet(role, neurons_of_mask(roles[role].bool()), kind="role")


def name_seed(seed: int, name: str) -> int:
    """A generator seed that depends on the seed and the set's name (stable across runs and platforms)."""
    return seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))


def sample_set(base: NeuronSet, size: int, seed: int = 0) -> NeuronSet:
    """`size` neurons of `base` drawn uniformly without replacement."""
    if not 0 < size <= len(base):
        raise UserError(f"--sample_size {size}: {base.name} has {len(base)} neurons; "
                        f"choose a size between 1 and {len(base)}")
    generator = torch.Generator().manual_seed(name_seed(seed, base.name))
    chosen = torch.randperm(len(base), generator=generator)[:size].sort().values
    return NeuronSet(f"{base.name} sample {size}", base.neurons[chosen], kind="sample", stands_for=base.name, seed=seed)


def same_layer_random(base: NeuronSet, d_mlp: int, seed: int) -> NeuronSet:
    """Per layer, as many neurons of that layer drawn at random as `base` has there (seeded by seed and name)."""
    generator = torch.Generator().manual_seed(name_seed(seed, base.name))
    parts = []
    for layer, neurons in sorted(base.by_layer().items()):
        drawn = torch.randperm(d_mlp, generator=generator)[:len(neurons)].sort().values
        parts.append(torch.stack([torch.full_like(drawn, layer), drawn], dim=1))
    neurons = torch.cat(parts) if parts else torch.zeros(0, 2, dtype=torch.long)
    return NeuronSet(f"random({base.name}) seed {seed}", neurons, kind="random", stands_for=base.name, seed=seed)


def random_baselines(base: NeuronSet, d_mlp: int, seeds: Iterable[int]) -> list[NeuronSet]:
    """One same-layer random set per seed."""
    return [same_layer_random(base, d_mlp, seed) for seed in seeds]


def requested_sets(categories: torch.Tensor, class_words: Sequence[str], roles: dict[str, torch.Tensor] | None,
                   role_names: Sequence[str], sample_sizes: Sequence[int], seed: int = 0) -> list[NeuronSet]:
    """The classes and roles asked for, then a sample of each size of each; refuses empty sets and oversize samples."""
    bases = [class_set(categories, parse_class(word)) for word in class_words]
    bases += [role_set(roles or {}, name) for name in role_names]
    if not bases:
        raise UserError("no neurons to ablate; name sets with --classes (and/or --roles)")
    for base in bases:
        if len(base) == 0:
            raise UserError(f"{base.name}: this model has no neurons in this set, so there is nothing to ablate; "
                            f"choose another (class sizes are in category_stats.csv)")
    samples = [sample_set(base, size, seed) for base in bases for size in sample_sizes]
    return bases + samples
