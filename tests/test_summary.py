"""The authors' published neuron summary in and out (b_import_summary.py, b_export_summary.py).

The published fixture is computed here from the column definitions alone (each document run on its own through the
Hugging Face model, g and u read off gate_proj and up_proj): per neuron and strict sign case, the frequency over all
tokens, the means of a, u, g and act(g), and the 16 documents of largest |value| in the case, padded with value 0 at
row 0 where fewer documents have the case, and no act(g) lists where the gate is open. Its import must give those
numbers to the statistics, pages and viewer (examples' positions found again by the model), its export and import
must give back the very statistics, and what does not fit is refused in one line with nothing written.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from helpers import call_arguments, refused, succeeds, tiny_run

from gated_core.artifacts import load_artifact
from neuroscope import b_export_summary, b_import_summary, d_recompute_vis
from neuroscope.activation_pass.store import Statistics, statistics_fingerprint
from neuroscope.summary.schema import CASES, VALUES, published_columns
from neuroscope.view.parts import IndexPart, LayerPart, inflated, read_plain

K = 16  # the published lists' length


def per_token_values(folder: Path, dataset) -> list[dict[str, np.ndarray]]:
    """Per document: a, u, g, act(g) [layer pos neuron] from the Hugging Face model, one document at a time."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
    seen: dict[str, list[torch.Tensor]] = {"g": [], "u": []}
    handles = [layer.mlp.gate_proj.register_forward_hook(lambda m, i, o: seen["g"].append(o[0])) for layer in model.model.layers]
    handles += [layer.mlp.up_proj.register_forward_hook(lambda m, i, o: seen["u"].append(o[0])) for layer in model.model.layers]
    documents = []
    for ids in dataset["input_ids"]:
        seen["g"].clear()
        seen["u"].clear()
        with torch.no_grad():
            model(torch.tensor([ids]))
        g, u = torch.stack(seen["g"]), torch.stack(seen["u"])
        act = torch.stack([layer.mlp.act_fn(g[i]) for i, layer in enumerate(model.model.layers)])
        documents.append({"hook_post": (act * u).numpy(), "hook_pre_linear": u.numpy(), "hook_pre": g.numpy(),
                          "swish": act.numpy()})
    for handle in handles:
        handle.remove()
    return documents


def case_masks(doc: dict[str, np.ndarray]) -> list[np.ndarray]:
    g, u = doc["hook_pre"], doc["hook_pre_linear"]
    return [(g > 0) & (u > 0), (g > 0) & (u < 0), (g < 0) & (u > 0), (g < 0) & (u < 0)]


def published_summary(documents: list[dict[str, np.ndarray]]) -> dict[str, list]:
    """The published columns of every neuron, by their definitions (a slow loop over neurons, cases and documents)."""
    n_layers, _, d_mlp = documents[0]["hook_post"].shape
    total = sum(doc["hook_post"].shape[1] for doc in documents)
    columns: dict[str, list] = {name: [] for name in published_columns()}
    for layer in range(n_layers):
        for neuron in range(d_mlp):
            columns["layer"].append(layer)
            columns["neuron"].append(neuron)
            for c, case in enumerate(CASES):
                masks = [case_masks(doc)[c][layer, :, neuron] for doc in documents]
                columns[f"{case}_freq"].append(sum(int(m.sum()) for m in masks) / total)
                for value in VALUES:
                    picked = np.concatenate([doc[value][layer, :, neuron][m] for doc, m in zip(documents, masks)])
                    columns[f"{case}_{value}_mean"].append(float(picked.astype(np.float64).mean()) if picked.size else math.nan)
                    if value == "swish" and case.startswith("gate+"):
                        continue
                    best = []  # (value of the document's most extreme token in the case, row)
                    for row, (doc, m) in enumerate(zip(documents, masks)):
                        if m.any():
                            values = doc[value][layer, :, neuron][m]
                            best.append((float(values[np.abs(values).argmax()]), row))
                    best = sorted(best, key=lambda item: (-abs(item[0]), item[1]))[:K]
                    best += [(0.0, 0)] * (K - len(best))
                    columns[f"{case}_{value}_max_values"].append([v for v, _ in best])
                    columns[f"{case}_{value}_max_indices"].append([r for _, r in best])
    return columns


@pytest.fixture(scope="module")
def world(tiny_models, tmp_path_factory):
    """A tiny Llama, its dataset and statistics `ref` (b_activations.py), and the published summary of the dataset
    saved by save_to_disk and as two parquet files."""
    datadir = tmp_path_factory.mktemp("summary_world")
    folder = tiny_models["llama"]
    source, dataset, results, viewer_argv = tiny_run(folder, datadir)
    documents = per_token_values(folder, dataset)
    columns = published_summary(documents)
    table = datasets.Dataset.from_dict(columns)
    table.save_to_disk(str(datadir / "summary" / "saved"))
    (datadir / "summary" / "parquet").mkdir()
    half = len(table) // 2
    table.select(range(half)).to_parquet(str(datadir / "summary" / "parquet" / "train-00000-of-00002.parquet"))
    table.select(range(half, len(table))).to_parquet(str(datadir / "summary" / "parquet" / "train-00001-of-00002.parquet"))
    return {"datadir": datadir, "model": folder, "columns": columns, "documents": documents, "results": results,
            "dataset": dataset}


def import_args(world, summary, save_to: str, *extra) -> list:
    return ["--summary", summary, "--model", world["model"], "--datadir", world["datadir"], "--dataset", "data",
            "--save_to", save_to, "--dtype", "float32", *extra]


def statistics(path: Path) -> Statistics:
    return Statistics.from_file(load_artifact(path))


@pytest.fixture(scope="module")
def imported(world):
    succeeds(b_import_summary.main, import_args(world, world["datadir"] / "summary" / "saved", "published"))
    return statistics(world["datadir"] / "published" / "stats.pt")


def test_the_import_gives_the_summary_s_numbers(world, imported):
    columns, documents = world["columns"], world["documents"]
    n_layers, d_mlp = imported.n_layers, imported.d_mlp
    freqs = np.array([columns[f"{case}_freq"] for case in CASES]).T.reshape(n_layers, d_mlp, len(CASES))
    assert np.array_equal(imported.sign_frequencies.numpy(), freqs)
    assert np.array_equal(imported.gate_open.numpy(), freqs[..., 0] + freqs[..., 1])
    every_a = np.concatenate([doc["hook_post"].astype(np.float64) for doc in documents], axis=1)  # [layer token neuron]
    assert np.allclose(imported.mean.numpy(), every_a.mean(axis=1), rtol=1e-5, atol=1e-9)  # tokens of g = 0 or u = 0: a = 0
    for c, case in enumerate(CASES):
        values = np.array(columns[f"{case}_hook_post_max_values"], dtype=np.float32).reshape(n_layers, d_mlp, K)
        rows = np.array(columns[f"{case}_hook_post_max_indices"]).reshape(n_layers, d_mlp, K)
        empty = values == 0
        assert np.array_equal(imported.combo_values[:, :, c].numpy(), np.where(empty, -np.inf, np.abs(values)))
        assert np.array_equal(imported.combo_docs[:, :, c].numpy(), np.where(empty, -1, rows))
    assert (imported.combo_positions[imported.combo_docs >= 0] == -1).all()  # no positions in the summary: unknown
    assert imported.histogram is None and imported.typical_docs is None and imported.nonfinite is None
    assert imported.meta.extra["imported"]["missing"]


@pytest.mark.parametrize("layer, neuron", [(0, 1), (1, 3)])
def test_the_max_and_min_lists_are_the_extreme_documents_of_a(world, imported, layer, neuron):
    """The max list: the documents' largest a in the two cases of a > 0, by value (a document once per case)."""
    candidates = {"top": [], "bottom": []}
    for row, doc in enumerate(world["documents"]):
        a = doc["hook_post"][layer, :, neuron]
        masks = case_masks(doc)
        for c in range(len(CASES)):
            in_case = a[masks[c][layer, :, neuron]]
            if in_case.size:
                candidates["top" if c in (0, 3) else "bottom"].append((float(in_case[np.abs(in_case).argmax()]), row))
    top = sorted(candidates["top"], key=lambda item: (-item[0], item[1]))[:K]
    bottom = sorted(candidates["bottom"], key=lambda item: (item[0], item[1]))[:K]
    got_top = [(v, d) for v, d in zip(imported.top_values[layer, neuron].tolist(), imported.top_docs[layer, neuron].tolist()) if d >= 0]
    got_bottom = [(v, d) for v, d in zip(imported.bottom_values[layer, neuron].tolist(),
                                         imported.bottom_docs[layer, neuron].tolist()) if d >= 0]
    assert [d for _, d in got_top] == [d for _, d in top] and np.allclose([v for v, _ in got_top], [v for v, _ in top])
    assert [d for _, d in got_bottom] == [d for _, d in bottom] and np.allclose([v for v, _ in got_bottom], [v for v, _ in bottom])


def test_pages_and_viewer_of_the_imported_summary(world, imported):
    """The model's weights at hand: pages of two neurons (positions found, values checked by recomputation) and the
    viewer of every neuron; the pages' numbers are the summary's, and they say what the summary does not hold."""
    results = world["datadir"] / "results_published"
    base = ["--model", world["model"], "--datadir", world["datadir"], "--activations", "published", "--results_dir", results,
            "--device", "cpu"]
    succeeds(d_recompute_vis.main, [*base, "--neurons", "0.1", "1.3"])
    succeeds(d_recompute_vis.main, [*base, "--neurons", "all", "--viewer", "viewer"])
    pages = results / "local" / "llama" / "neuroscope"
    page = (pages / "L1" / "N3" / "vis.html").read_text()
    assert "imported from a published neuron summary" in page and "the activation histogram" in page
    layer_call = re.search(r"^neuroscope\.layer\((.*)\);$", page, re.M)
    layer_part = read_plain(LayerPart, inflated(json.loads(f"[{layer_call.group(1)}]")[1]))
    assert np.isnan(layer_part.examples.bos_value.array()).all()  # the first token's a is not known: –, not 0
    recomputed = load_artifact(pages / "L1" / "N3" / "activations.pt")
    kinds = {row["kind"] for row in recomputed["examples"]}
    assert {"max", "min"} <= kinds and len(recomputed["examples"]) >= 2 * len(CASES)
    for row in recomputed["examples"]:  # the position found: the document's token whose a is the stored value
        a = world["documents"][row["doc"]]["hook_post"][1, :, 3]
        assert row["position"] == int(np.abs(a - row["stored"]).argmin())
        assert a[row["position"]] == pytest.approx(row["stored"], rel=1e-5, abs=1e-6)
    data = pages / "viewer" / "data"
    index = read_plain(IndexPart, inflated(call_arguments(data / "index.js")[0]))
    assert np.allclose(index.mean.array(), imported.mean.flatten().numpy(), rtol=1e-6)
    assert np.allclose(index.gate_open.array(), imported.gate_open.flatten().numpy(), rtol=1e-6)
    layer = read_plain(LayerPart, inflated(call_arguments(data / "layer_1.js")[1]))
    assert np.allclose(layer.sign_frequencies.array().reshape(-1, len(CASES)), imported.sign_frequencies[1].numpy(), rtol=1e-6)
    meta = (data / "meta.js").read_text()
    assert "imported from a published neuron summary" in meta


@pytest.mark.parametrize("form", ["saved", "parquet"])
def test_export_then_import_gives_back_the_very_statistics(world, tmp_path, form):
    datadir = tmp_path / "data"
    shutil.copytree(world["datadir"] / "data", datadir / "data")
    shutil.copytree(world["datadir"] / "ref", datadir / "ref")
    (datadir / "ref" / "stats.pt.lock").unlink(missing_ok=True)
    succeeds(b_export_summary.main, ["--datadir", datadir, "--activations", "ref", "--save_to", "export"])
    assert set(published_columns()) <= set(datasets.load_from_disk(str(datadir / "export" / "saved")).column_names)
    succeeds(b_import_summary.main, [*import_args({**world, "datadir": datadir}, datadir / "export" / form, "back")])
    original, back = load_artifact(datadir / "ref" / "stats.pt"), load_artifact(datadir / "back" / "stats.pt")
    for name, tensor in original.items():
        if isinstance(tensor, torch.Tensor):
            assert tensor.dtype == back[name].dtype and torch.equal(tensor, back[name]), name
    assert statistics_fingerprint(back) == statistics_fingerprint(original)
    exported = datasets.load_from_disk(str(datadir / "export" / "saved"))
    stats = Statistics.from_file(original)
    first = exported[0]
    assert first["gate+_in+_freq"] == pytest.approx(float(stats.sign_frequencies[0, 0, 0]))
    assert first["gate+_in-_hook_post_max_values"][0] == pytest.approx(-float(stats.combo_values[0, 0, 1, 0]))
    assert math.isnan(first["gate+_in+_hook_post_mean"])  # not computed by the pass


def bad_summary(world, tmp_path, change) -> Path:
    """The published summary, changed by `change(columns) -> columns`, saved by save_to_disk."""
    columns = change({name: list(values) for name, values in world["columns"].items()})
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "bad"))
    return tmp_path / "bad"


def drop_last_layer(columns):
    keep = [i for i, layer in enumerate(columns["layer"]) if layer < max(columns["layer"])]
    return {name: [values[i] for i in keep] for name, values in columns.items()}


def rows_beyond(columns):
    rows = [list(r) for r in columns["gate+_in+_hook_post_max_indices"]]
    rows[0][0] = 10_000
    values = [list(v) for v in columns["gate+_in+_hook_post_max_values"]]
    values[0][0] = values[0][0] or 1.0
    return {**columns, "gate+_in+_hook_post_max_indices": rows, "gate+_in+_hook_post_max_values": values}


@pytest.mark.parametrize("change, match", [
    (drop_last_layer, "a summary of another model"),
    (rows_beyond, "a summary of another text dataset"),
    (lambda c: {k: v for k, v in c.items() if k != "gate-_in-_hook_post_mean"}, "columns missing"),
    (lambda c: {**c, "gate+_in+_freq": [2.0] * len(c["gate+_in+_freq"])}, "not frequencies"),
    (lambda c: {**c, "neuron": c["neuron"][::-1]}, "rows must be layer"),
])
def test_a_summary_that_does_not_fit_is_refused(world, tmp_path, change, match):
    summary = bad_summary(world, tmp_path, change)
    refused(b_import_summary.main, import_args(world, summary, "bad_import"), world["datadir"], match)
    assert not (world["datadir"] / "bad_import").exists()


def test_a_truncated_parquet_file_is_refused(world, tmp_path):
    shutil.copytree(world["datadir"] / "summary" / "parquet", tmp_path / "parquet")
    damaged = tmp_path / "parquet" / "train-00001-of-00002.parquet"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    refused(b_import_summary.main, import_args(world, tmp_path / "parquet", "bad_import"), world["datadir"],
            "cannot read it as a neuron summary")


def test_an_export_whose_columns_changed_is_refused(world, tmp_path):
    datadir = tmp_path / "data"
    shutil.copytree(world["datadir"] / "data", datadir / "data")
    shutil.copytree(world["datadir"] / "ref", datadir / "ref")
    succeeds(b_export_summary.main, ["--datadir", datadir, "--activations", "ref", "--save_to", "export"])
    saved = datasets.load_from_disk(str(datadir / "export" / "saved"))
    changed = saved.map(lambda row: {"neuroscope_mean": row["neuroscope_mean"] + 1.0})
    changed.save_to_disk(str(tmp_path / "changed"))
    refused(b_import_summary.main, import_args({**world, "datadir": datadir}, tmp_path / "changed", "back"), datadir,
            "not the statistics its metadata was written with")
    refused(b_export_summary.main, ["--datadir", datadir, "--activations", "ref", "--save_to", "export"], datadir, "exists")


def by_row(values, rows) -> dict[int, float]:
    """A list's value of each row it names (padding left out)."""
    return {row: value for value, row in zip(values, rows) if value != 0}


def test_complete_export_computes_every_published_column_by_its_definition(world, tmp_path):
    """--complete: the model's pass gives the very columns that the slow loop of `published_summary` gives."""
    datadir = tmp_path / "data"
    shutil.copytree(world["datadir"] / "data", datadir / "data")
    shutil.copytree(world["datadir"] / "ref", datadir / "ref")
    succeeds(b_export_summary.main, ["--datadir", datadir, "--activations", "ref", "--save_to", "export", "--complete",
                                     "--model", world["model"], "--device", "cpu", "--batch_size", "3",
                                     "--checkpoint_every", "1"])
    exported = datasets.load_from_disk(str(datadir / "export" / "saved"))
    expected = world["columns"]
    for name in (name for name in published_columns() if not name.endswith(("_max_values", "_max_indices"))):
        got, want = np.array(exported[name], dtype=np.float64), np.array(expected[name], dtype=np.float64)
        assert np.allclose(got, want, rtol=1e-4, atol=1e-6, equal_nan=True), name
    assert len(world["documents"]) < K  # so every document with a case is in its list, whatever the near-ties' order
    for name in (name for name in published_columns() if name.endswith("_max_values")):
        rows_name = name.replace("_max_values", "_max_indices")
        for neuron, values in enumerate(exported[name]):
            got, want = by_row(values, exported[rows_name][neuron]), by_row(expected[name][neuron], expected[rows_name][neuron])
            assert sorted(got) == sorted(want), (name, neuron)
            assert np.allclose([got[row] for row in want], list(want.values()), rtol=1e-4, atol=1e-6), (name, neuron)
            magnitudes = np.abs(values)
            assert (magnitudes[:-1] >= magnitudes[1:]).all(), (name, neuron)  # by decreasing |value|, padding last
    assert not list(datadir.glob("*.partial*"))  # the pass's checkpoint is gone once the export is written
    card = (datadir / "export" / "README.md").read_text()
    assert "computed by its definition" in card and "Not computed" not in card


def test_the_complete_pass_resumes_from_its_checkpoint_without_loss(world, tmp_path, monkeypatch):
    from gated_core.models.loading import load_hf_model
    from gated_core.models.sources import resolve_model
    from neuroscope.data.dataset_store import load_tokenized
    from neuroscope.summary import case_pass

    model, _ = load_hf_model(resolve_model(str(world["model"])), dtype=torch.float32, device="cpu")
    dataset, _ = load_tokenized(world["datadir"] / "data")
    whole = case_pass.case_pass(model, dataset, K, 2, 0, "cpu", case_pass.CaseCheckpoint(tmp_path / "none.pt", {}), 0)
    checkpoint = case_pass.CaseCheckpoint(tmp_path / "checkpoint.pt", {"run": 1})
    batches = case_pass.padded_batches

    def killed_after_two(*args, **kwargs):
        for count, batch in enumerate(batches(*args, **kwargs)):
            if count == 2:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(case_pass, "padded_batches", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        case_pass.case_pass(model, dataset, K, 2, 0, "cpu", checkpoint, 1)
    monkeypatch.setattr(case_pass, "padded_batches", batches)
    assert checkpoint.load().next_batch == 2
    resumed = case_pass.case_pass(model, dataset, K, 2, 0, "cpu", checkpoint, 1)
    for name in ("counts", "sums", "magnitudes", "rows"):
        assert torch.equal(getattr(resumed, name), getattr(whole, name)), name
    assert resumed.tokens == whole.tokens == sum(dataset["length"])
    assert case_pass.CaseCheckpoint(checkpoint.path, {"run": 2}).load() is None  # another run's checkpoint: started again


def readme_commands(heading: str) -> list[str]:
    """The lines of the first shell block under `heading` in README.md."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()


def test_the_readme_section_runs_as_written_on_the_fixtures(world, tmp_path):
    """README's "Use the authors' published data", its variables set to the fixtures: the published text dataset
    (the world's rows, saved as parquet), the published summary, the tiny model; two of its neurons for OLMo's."""
    import importlib
    import shlex

    text = tmp_path / "dolma-small"
    text.mkdir()
    rows = world["dataset"].select_columns(["input_ids", "attention_mask"])
    rows.to_parquet(str(text / "train-00000-of-00001.parquet"))
    fixtures = {"MODEL": str(world["model"]), "TEXT": str(text), "SUMMARY": str(world["datadir"] / "summary" / "parquet")}
    commands = [line.split("  #")[0].strip() for line in readme_commands("Use the authors' published data")]
    assert {line.split("=")[0] for line in commands if "=" in line.split(" ")[0]} == set(fixtures)
    scripts = [line for line in commands if line.startswith("python ")]
    assert [line.split()[1] for line in scripts] == ["a_dataset.py", "b_import_summary.py", "d_recompute_vis.py"]
    datadir = tmp_path / "data"
    for line in scripts:
        for name, value in fixtures.items():
            line = line.replace(f"${name}", shlex.quote(value))
        argv = [datadir if arg == "../data" else arg for arg in shlex.split(line)[2:]]
        argv = ["1.3" if arg == "28.4737" else "0.1" if arg == "29.10900" else arg for arg in argv]
        script = importlib.import_module(f"neuroscope.{line.split()[1].removesuffix('.py')}")
        extra = ["--results_dir", tmp_path / "results", "--device", "cpu"] if "d_recompute_vis" in line else []
        succeeds(script.main, [*argv, *extra])
    page = tmp_path / "results" / "local" / "llama" / "neuroscope" / "L1" / "N3" / "vis.html"
    assert "imported from a published neuron summary" in page.read_text()


def test_statistics_only_pages_need_no_weights(world, imported, tmp_path):
    """A model folder with its config and tokenizer but no weights: the imported summary's pages show its numbers and
    the example documents' text, say that the positions are unknown, and keep hostile text inert."""
    weightless = tmp_path / "llama-config-only"
    shutil.copytree(world["model"], weightless, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    assert list(Path(world["model"]).glob("*.safetensors")) and not list(weightless.glob("*.safetensors"))
    datadir = tmp_path / "data"
    shutil.copytree(world["datadir"] / "data", datadir / "data")
    succeeds(b_import_summary.main, import_args({**world, "model": weightless, "datadir": datadir},
                                                world["datadir"] / "summary" / "saved", "published"))
    results = tmp_path / "results"
    succeeds(d_recompute_vis.main, ["--model", weightless, "--datadir", datadir, "--activations", "published",
                                    "--results_dir", results, "--neurons", "1.3", "0.1", "--statistics_only"])
    folder = results / "local" / weightless.name / "neuroscope" / "statistics-only"
    page = (folder / "L1N3.html").read_text()
    stats = statistics(datadir / "published" / "stats.pt")
    assert f"{stats.mean[1, 3].item():.4g}" in page and f"{stats.gate_open[1, 3].item():.2%}" in page
    for value in stats.sign_frequencies[1, 3].tolist():
        assert f"{value:.2%}" in page
    for value, doc in zip(stats.top_values[1, 3].tolist(), stats.top_docs[1, 3].tolist()):
        if doc >= 0:
            assert f"<td class=\"num\">{value:.4g}</td><td class=\"num\">{doc}</td>" in page
    assert "do not hold these examples' token positions" in page and "imported from a published neuron summary" in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # PASS_TEXTS' markup, shown as text
    assert "L1N3.html" in (folder / "index.html").read_text()
