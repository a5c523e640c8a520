"""Classes across checkpoints (`wcos_casestudies/compare.py`): a model against itself changes nothing; a copy with
chosen neurons' output weights negated moves exactly those neurons to the mirrored class (enrichment <-> depletion,
in every variant; the classes with linout ~ 0 stay), which the transition tables, the per-layer table and the list of
changed neurons show; models of other shapes are refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import refused, succeeds
from safetensors.torch import load_file, save_file

from wcos_casestudies import compare
from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.synthetic import tiny_checkpoint

THRESHOLD = "0.05"  # a low t: the tiny random model's neurons fall in every class
# negating w_out negates linout and gateout: linout +1 <-> -1, typicality unchanged (gatelin = linout * gateout)
MIRROR = {0: 7, 1: 8, 2: 9, 3: 10, 7: 0, 8: 1, 9: 2, 10: 3, 4: 4, 5: 5, 6: 6}


def negated_outputs(model: Path, folder: Path, neurons: list[tuple[int, int]]) -> Path:
    """A copy of the checkpoint `model` with the output weights of `neurons` negated."""
    shutil.copytree(model, folder)
    weights = load_file(str(folder / "model.safetensors"))
    for layer, neuron in neurons:
        weights[f"model.layers.{layer}.mlp.down_proj.weight"][:, neuron] *= -1
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def classes_of(model: Path, results: Path) -> torch.Tensor:
    data = torch.load(next((results / "local" / model.name).rglob("data.pt")), weights_only=False)
    return data["categories"].long()


def run_compare(model: Path, other: Path, results: Path):
    return succeeds(compare.main, ["--model", model, "--other", other, "--results_dir", results, "--threshold", THRESHOLD])


def comparison(results: Path, model: Path, other: Path) -> Path:
    return next((results / "local" / model.name).rglob(f"compare/local_{other.name}"))


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    base = tiny_checkpoint("llama", root / "base", seed=11)
    return {"base": base, "root": root}


def test_a_model_against_itself_is_all_diagonal(models, tmp_path):
    run_compare(models["base"], models["base"], tmp_path)
    folder = comparison(tmp_path, models["base"], models["base"])
    matrix = pd.read_csv(folder / "transitions.csv").set_index("before")[list(CLASS_NAMES)].to_numpy()
    classes = classes_of(models["base"], tmp_path)
    assert (matrix == torch.diag(torch.bincount(classes.flatten(), minlength=len(CLASS_NAMES))).numpy()).all()
    assert len(pd.read_csv(folder / "changed.csv")) == 0
    assert (folder / "transitions.png").is_file() and (folder / "transitions.md").is_file()


def test_negated_outputs_move_exactly_those_neurons_to_the_mirrored_class(models, tmp_path):
    base = models["base"]
    run_compare(base, base, tmp_path / "first")  # the base's classes, to choose neurons of classes that mirror
    classes = classes_of(base, tmp_path / "first")
    chosen = [(layer, neuron) for layer in range(classes.shape[0]) for neuron in range(classes.shape[1])
              if MIRROR[int(classes[layer, neuron])] != int(classes[layer, neuron])][::5]
    assert len(chosen) >= 5
    edited = negated_outputs(base, models["root"] / f"edited_{len(chosen)}", chosen)
    outcome = run_compare(base, edited, tmp_path / "second")
    expected = classes.clone()
    for layer, neuron in chosen:
        expected[layer, neuron] = MIRROR[int(classes[layer, neuron])]
    assert torch.equal(classes_of(edited, tmp_path / "second"), expected)  # the independent expectation holds

    folder = comparison(tmp_path / "second", base, edited)
    changed = pd.read_csv(folder / "changed.csv")
    assert sorted(zip(changed["layer"], changed["neuron"])) == sorted(chosen)
    assert all(CLASS_NAMES[MIRROR[CLASS_NAMES.index(b)]] == a for b, a in zip(changed["before"], changed["after"]))
    assert (changed["linout before"] == -changed["linout after"]).all()
    assert (changed["gatelin before"] == changed["gatelin after"]).all()
    by_layer = pd.read_csv(folder / "transitions_by_layer.csv")
    for layer in range(classes.shape[0]):  # each layer's counts against a loop over its neurons
        for (b, a), count in pd.Series(list(zip(classes[layer].tolist(), expected[layer].tolist()))).value_counts().items():
            row = by_layer[(by_layer["layer"] == layer) & (by_layer["before"] == CLASS_NAMES[b]) & (by_layer["after"] == CLASS_NAMES[a])]
            assert int(row["count"].iloc[0]) == count
    matrix = pd.read_csv(folder / "transitions.csv").set_index("before")
    assert int(matrix[list(CLASS_NAMES)].to_numpy().sum()) == classes.numel()
    shares = matrix[[f"share {name}" for name in CLASS_NAMES]].sum(axis=1)
    assert ((shares - 1).abs() < 1e-3)[matrix["neurons"] > 0].all()
    reverse = pd.read_csv(comparison(tmp_path / "second", edited, base) / "transitions.csv").set_index("before")
    assert (reverse[list(CLASS_NAMES)].to_numpy() == matrix[list(CLASS_NAMES)].to_numpy().T).all()  # the other's view
    assert f"{len(chosen)} of {classes.numel()} neurons changed class" in outcome.out
    index = (folder.parents[1] / "index.html").read_text()
    assert "compare/" in index and "transitions" in index  # linked from the model's index page


def test_models_of_other_shapes_are_refused_in_one_line(models, tmp_path):
    other = tiny_checkpoint("llama", models["root"] / "wider", seed=3, d_mlp=128)
    line = refused(compare.main, ["--model", models["base"], "--other", other, "--results_dir", tmp_path], tmp_path,
                   "are of other shapes (d_mlp 96 against 128)")
    assert not tmp_path.exists() or not any(tmp_path.iterdir()), line  # refused before any cosine was computed


def test_roles_are_compared_where_casestudies_ran_for_both(models, tmp_path, monkeypatch):
    from helpers import run_casestudies

    base = models["base"]
    edited = negated_outputs(base, models["root"] / "roles_edited", [(1, n) for n in range(0, 96, 3)])
    for model in (base, edited):
        run_casestudies(monkeypatch, ["--model", model, "--results_dir", tmp_path, "--skip_attention", "--threshold", THRESHOLD])
    run_compare(base, edited, tmp_path)
    roles = pd.read_csv(comparison(tmp_path, base, edited) / "roles.csv").set_index("role")
    stored = {m: torch.load(next((tmp_path / "local" / m.name).rglob("roles.pt")), weights_only=False)["roles"]
              for m in (base, edited)}
    for role, row in roles.iterrows():  # against the masks of both roles.pt
        before, after = stored[base][role].bool(), stored[edited][role].bool()
        assert (row["before"], row["after"], row["kept"], row["gained"], row["lost"]) == \
            (int(before.sum()), int(after.sum()), int((before & after).sum()), int((after & ~before).sum()),
             int((before & ~after).sum()))
    assert set(roles.index) == set(stored[base]) & set(stored[edited]) and len(roles) > 0
