"""The chain of fingerprints: each artifact records the fingerprint of what it was made from and its reader checks
that one key. dataset (its fingerprint) -> statistics (`Statistics.fingerprint`: of their identity and tensors) ->
recomputed values (activations.pt), viewers (meta.js, neuroscope_viewer.json) and mean ablations (sets.pt).

Each test changes one link (the dataset rebuilt with other text, the statistics made again, other weights of the
same name) and checks that the next artifact is refused in one line naming what changed, and that an unchanged
chain is accepted.
"""

from __future__ import annotations

import codecs
import json
import shutil
from pathlib import Path

import pytest
from helpers import CORPUS_TEXTS, dataset_args, page_args, pass_args, refused, succeeds, write_corpus

from gated_core.artifacts import check_made_from, load_artifact, save_artifact
from gated_core.errors import UserError
from gated_core.models.sources import resolve_model
from neuroscope import a_dataset, b_activations, c_neuron_vis, d_recompute_vis
from neuroscope.activation_pass.store import Statistics, load_statistics
from wcos_casestudies import main as main_script
from wcos_casestudies.synthetic import tiny_checkpoint

PAGES = Path("results/local/llama/neuroscope")  # below a tree of `chain`
VALUES = PAGES / "L0" / "N1" / "activations.pt"  # of the neuron that page_args asks for


def viewer_args(model: Path, datadir: Path, results: Path, *extra) -> list:
    return ["--model", model, "--datadir", datadir, "--activations", "acts", "--results_dir", results, "--device", "cpu",
            "--neurons", "1.*", *extra]


@pytest.fixture(scope="module")
def chain(work, tmp_path_factory) -> Path:
    """A tree with a dataset `docs`, its statistics `acts`, the page and recomputed values of neuron 0.1 and a viewer
    `whole` of layer 1, all made from one another."""
    tree = tmp_path_factory.mktemp("chain")
    datadir = tree / "data"
    succeeds(a_dataset.main, dataset_args(datadir, "docs", write_corpus(tree / "v1.jsonl", CORPUS_TEXTS), work["model"]))
    succeeds(b_activations.main, pass_args(work["model"], datadir, "acts"))
    succeeds(d_recompute_vis.main, page_args(work["model"], datadir, tree / "results"))
    succeeds(d_recompute_vis.main, viewer_args(work["model"], datadir, tree / "results", "--viewer", "whole"))
    return tree


def copied(chain: Path, tmp_path: Path) -> Path:
    """A copy of the chain's tree that a test may change (its statistics still name the dataset of `chain`: passes
    made again here record the copy's)."""
    shutil.copytree(chain, tmp_path / "tree", symlinks=True)
    return tmp_path / "tree"


def fingerprint(model: Path, datadir: Path) -> str:
    return load_statistics(resolve_model(str(model)), datadir, "acts").fingerprint


# ----------------------------------------------------------------------------- the links, end to end


def test_an_unchanged_chain_is_accepted(work, chain, tmp_path):
    """Pages from the kept values, a viewer of some layers from the whole one: nothing recomputed, nothing refused."""
    tree = copied(chain, tmp_path)
    model, datadir = work["model"], tree / "data"
    recorded = load_artifact(tree / VALUES)["meta"]["statistics_fingerprint"]
    assert recorded == fingerprint(model, datadir)
    succeeds(c_neuron_vis.main, page_args(model, datadir, tree / "results"))
    succeeds(d_recompute_vis.main, viewer_args(model, datadir, tree / "results", "--from_viewer", "whole", "--viewer", "part"))
    marker = json.loads((tree / PAGES / "part" / "neuroscope_viewer.json").read_text())
    assert marker["statistics_fingerprint"] == recorded


def test_a_rebuilt_dataset_refuses_its_statistics_and_what_came_from_them(work, chain, tmp_path):
    """The dataset rebuilt with other text of the same lengths: its statistics are refused (naming the dataset);
    statistics made again are other statistics, so the values and the viewer made from the old ones are refused
    (naming the statistics) until they are made again."""
    tree = copied(chain, tmp_path)
    model, datadir, results = work["model"], tree / "data", tree / "results"
    before = fingerprint(model, datadir)
    succeeds(b_activations.main, pass_args(model, datadir, "acts", "--overwrite"))  # of the copy's dataset now
    assert fingerprint(model, datadir) == before  # made again from the same inputs: the same statistics
    rotated = write_corpus(tmp_path / "v2.jsonl", [codecs.encode(text, "rot13") for text in CORPUS_TEXTS])
    succeeds(a_dataset.main, dataset_args(datadir, "docs", rotated, model) + ["--overwrite"])
    refused(b_activations.main, pass_args(model, datadir, "acts"), tree, "other contents of the dataset")
    old = fingerprint(model, datadir)
    succeeds(b_activations.main, pass_args(model, datadir, "acts", "--overwrite"))
    new = fingerprint(model, datadir)
    assert new != old
    line = refused(c_neuron_vis.main, page_args(model, datadir, results), tree, "recomputed with other statistics")
    assert str(tree / VALUES) in line and old[:8] in line and new[:8] in line and "b2_recompute.py" in line
    line = refused(d_recompute_vis.main, viewer_args(model, datadir, results, "--from_viewer", "whole", "--viewer", "part"),
                   tree, "a viewer made with other statistics")
    assert "whole" in line and "--from_viewer" in line
    succeeds(d_recompute_vis.main, page_args(model, datadir, results))  # recomputed: the chain holds again
    succeeds(c_neuron_vis.main, page_args(model, datadir, results))
    assert load_artifact(tree / VALUES)["meta"]["statistics_fingerprint"] == new


def test_statistics_made_again_in_place_are_other_statistics(work, chain, tmp_path):
    """The same dataset and model, the pass made again with another setting: the kept values are refused."""
    tree = copied(chain, tmp_path)
    model, datadir = work["model"], tree / "data"
    succeeds(b_activations.main, pass_args(model, datadir, "acts", "--overwrite", "--examples_per_neuron", 1))
    refused(c_neuron_vis.main, page_args(model, datadir, tree / "results"), tree, "recomputed with other statistics")


def test_other_weights_refuse_the_statistics_and_the_cosines(work, chain, tmp_path):
    """Another checkpoint of the same name: the statistics (and so everything made from them) and data.pt are refused,
    each naming the weights."""
    tree = copied(chain, tmp_path)
    other = tiny_checkpoint("llama", tmp_path / "b" / "llama", seed=11)
    refused(c_neuron_vis.main, page_args(other, tree / "data", tree / "results"), tree, "were made with other weights")
    refused(d_recompute_vis.main, viewer_args(other, tree / "data", tree / "results", "--from_viewer", "whole", "--viewer",
                                              "part"), tree, "were made with other weights")
    refused(main_script.main, ["--model", other, "--results_dir", tree / "results"], tree, "of other weights")


# ----------------------------------------------------------------------------- the statistics fingerprint


def test_the_statistics_fingerprint_is_of_their_contents(chain, tmp_path):
    """The same for a copy elsewhere and for a file of an older version (no recorded tensor digest); another for
    other numbers or another setting of the pass; not changed by where the dataset lies or how long the pass took."""
    data = load_artifact(chain / "data" / "acts" / "stats.pt")
    base = Statistics.from_file(data).fingerprint

    def changed(**meta) -> str:
        path = tmp_path / "stats.pt"
        save_artifact({**data, "meta": {**data["meta"], **meta}}, path)
        return Statistics.from_file(load_artifact(path)).fingerprint

    assert changed() == base
    older = {key: value for key, value in data["meta"].items() if key != "tensors_digest"}
    assert Statistics.from_file({**data, "meta": older}).fingerprint == base
    assert changed(dataset="/elsewhere/docs", seconds=123.0) == base
    assert changed(batch_size=99) != base and changed(weights_fingerprint="0" * 16) != base
    other_numbers = {**data, "meta": older, "top_values": data["top_values"] + 1}
    assert Statistics.from_file(other_numbers).fingerprint != base


def test_check_made_from_says_which_input_changed(tmp_path):
    path = tmp_path / "thing.pt"
    check_made_from(path, {"statistics_fingerprint": "a" * 16}, "statistics_fingerprint", "a" * 16, "redo it")
    cases = [({"statistics_fingerprint": "b" * 16}, "statistics_fingerprint", "were made with other statistics (fingerprint "
              "bbbbbbbb, now aaaaaaaa"),
             ({}, "dataset_fingerprint", "records no dataset fingerprint (written by an older version)"),
             ({"weights_fingerprint": "full:" + "b" * 16}, "weights_fingerprint", "made with --full_hash")]
    for meta, key, match in cases:
        with pytest.raises(UserError) as raised:
            check_made_from(path, meta, key, "a" * 16, "redo it")
        message = str(raised.value)
        assert message.startswith(f"{path}: ") and match in message and message.endswith("redo it")
        assert "\n" not in message
