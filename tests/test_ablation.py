"""Class ablations and activation frequency by class, against independent computations on a tiny
random Llama: the baseline against Hugging Face's own loss, the empty set, a whole layer against a
zeroed MLP output, mean and conditional ablation token by token, random baselines, the bootstrap,
the command lines (resumption, shared baseline) and bad inputs."""

from __future__ import annotations

import pytest
import torch
from helpers import ABLATION_TEXTS, CONDITIONAL_DEPLETION, DEPLETION, ORTHOGONAL, PLANTED, ablate

from gated_core.artifacts import load_artifact
from gated_core.cli import run_main
from gated_core.locks import hold_lock
from neuroscope import e_ablate, e_frequency
from neuroscope.classes.ablation import CONDITIONS, Ablation, ablation_hooks, evaluate
from neuroscope.classes.ablation_report import Bootstrap
from neuroscope.classes.frequency import class_frequencies
from neuroscope.classes.neuron_sets import NeuronSet, parse_class, random_baselines, same_layer_random, sample_set
from neuroscope.core.batches import batch_plan
from wcos_casestudies.constants import CLASS_NAMES

CPU = torch.device("cpu")


def plan_of(dataset, batch_size=3):
    return batch_plan(list(dataset["length"]), batch_size)


def planted_set(code: int) -> NeuronSet:
    pairs = [(layer, n) for layer, neurons in PLANTED[code].items() for n in neurons]
    return NeuronSet(CLASS_NAMES[code], torch.tensor(sorted(pairs)), kind="class")


def test_baseline_loss_equals_hugging_face_loss(ablation_world):
    model, dataset = ablation_world["model"], ablation_world["dataset"]
    baseline = evaluate(model, dataset, plan_of(dataset), ablation_world["pad_id"], CPU)
    checked = 0
    for row, ids in enumerate(dataset["input_ids"]):
        mine = baseline.values[baseline.documents == row, 0]
        assert mine.numel() == len(ids) - 1
        if len(ids) < 2:
            continue
        with torch.no_grad():
            theirs = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
        assert float(mine.double().mean()) == pytest.approx(float(theirs), abs=1e-5)
        checked += 1
    assert checked >= len(ABLATION_TEXTS) - 1


def test_empty_set_reproduces_the_baseline_exactly(ablation_world):
    model, dataset = ablation_world["model"], ablation_world["dataset"]
    baseline = evaluate(model, dataset, plan_of(dataset), ablation_world["pad_id"], CPU)
    empty = Ablation(NeuronSet("nothing", torch.zeros(0, 2, dtype=torch.long), kind="class"))
    ablated = evaluate(model, dataset, plan_of(dataset), ablation_world["pad_id"], CPU, empty)
    assert torch.equal(ablated.values, baseline.values) and torch.equal(ablated.documents, baseline.documents)
    assert ablated.touched == 0


@pytest.mark.parametrize("layer", [0, 1])
def test_zero_ablating_a_whole_layer_equals_a_zeroed_mlp_output(ablation_world, layer):
    model, dataset = ablation_world["model"], ablation_world["dataset"]
    d_mlp = model.config.intermediate_size
    everything = NeuronSet("layer", torch.stack([torch.full((d_mlp,), layer), torch.arange(d_mlp)], dim=1), kind="class")
    ablated = evaluate(model, dataset, plan_of(dataset), ablation_world["pad_id"], CPU, Ablation(everything))
    handle = model.model.layers[layer].mlp.register_forward_hook(lambda module, inputs, output: torch.zeros_like(output))
    try:
        zeroed = evaluate(model, dataset, plan_of(dataset), ablation_world["pad_id"], CPU)
    finally:
        handle.remove()
    assert torch.allclose(ablated.values, zeroed.values, rtol=1e-5, atol=1e-5)
    assert ablated.touched == ablated.values.shape[0]
    baseline = evaluate(model, dataset, plan_of(dataset), ablation_world["pad_id"], CPU)
    assert not torch.allclose(baseline.values[:, 0], zeroed.values[:, 0], atol=1e-3)  # the layer does matter


def capture_around_ablation(model, dataset, ablation, means, pad_id):
    """One batch: g and a before the ablation hook, a after it, for every layer ([batch pos neuron])."""
    from neuroscope.core.batches import pad_batch

    seen = {"g": {}, "before": {}, "after": {}}
    handles = []
    for layer, block in enumerate(model.model.layers):
        handles.append(block.mlp.gate_proj.register_forward_hook(
            lambda m, i, out, layer=layer: seen["g"].__setitem__(layer, out.clone())))
        handles.append(block.mlp.down_proj.register_forward_pre_hook(
            lambda m, inputs, layer=layer: seen["before"].__setitem__(layer, inputs[0].clone())))
    batch = dataset[list(range(len(dataset)))]
    ids, mask = pad_batch(batch["input_ids"], batch["attention_mask"], pad_id, CPU)
    try:
        with ablation_hooks(model, ablation, means), torch.inference_mode():
            for layer, block in enumerate(model.model.layers):  # registered after the ablation: sees its result
                handles.append(block.mlp.down_proj.register_forward_pre_hook(
                    lambda m, inputs, layer=layer: seen["after"].__setitem__(layer, inputs[0].clone())))
            model.model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return seen, mask


def test_mean_ablation_uses_the_dataset_mean_of_the_statistics(ablation_world):
    means = ablation_world["stats"]["mean"]
    chosen = planted_set(DEPLETION)
    seen, mask = capture_around_ablation(ablation_world["model"], ablation_world["dataset"], Ablation(chosen, "mean"), means, ablation_world["pad_id"])
    for layer, neuron in chosen.neurons.tolist():
        values = seen["after"][layer][..., neuron][mask.bool()]
        assert torch.all(values == means[layer, neuron].float()), (layer, neuron)
    untouched = torch.ones(2, ablation_world["model"].config.intermediate_size, dtype=torch.bool)
    untouched[chosen.neurons[:, 0], chosen.neurons[:, 1]] = False
    for layer in range(2):
        assert torch.equal(seen["after"][layer][..., untouched[layer]], seen["before"][layer][..., untouched[layer]])


@pytest.mark.parametrize("condition", CONDITIONS)
def test_conditional_ablation_touches_only_its_sign_combination(ablation_world, condition):
    """Token by token and neuron by neuron: replaced exactly where (sign g, sign a) is the combination."""
    means = ablation_world["stats"]["mean"]
    chosen = planted_set(DEPLETION)
    seen, mask = capture_around_ablation(ablation_world["model"], ablation_world["dataset"], Ablation(chosen, "mean", condition), means,
                                         ablation_world["pad_id"])
    want_gate, want_post = condition[4] == "+", condition[-1] == "+"
    members = set(map(tuple, chosen.neurons.tolist()))
    replaced = 0
    for layer in range(2):
        g, before, after = seen["g"][layer], seen["before"][layer], seen["after"][layer]
        for b, p in torch.nonzero(mask).tolist():
            for neuron in range(before.shape[-1]):
                old, new = float(before[b, p, neuron]), float(after[b, p, neuron])
                hit = (layer, neuron) in members and (float(g[b, p, neuron]) > 0) == want_gate and (old > 0) == want_post
                expected = float(means[layer, neuron].float()) if hit else old
                assert new == expected, (layer, b, p, neuron)
                replaced += hit
    assert replaced > 0


def test_random_baselines_match_per_layer_counts():
    base = NeuronSet("some class", torch.tensor([[0, 3], [0, 7], [2, 1], [2, 5], [2, 9], [5, 0]]), kind="class")
    first = random_baselines(base, 16, range(4))
    for random_set in first:
        assert torch.equal(random_set.layer_counts(6), base.layer_counts(6))
        assert len(set(map(tuple, random_set.neurons.tolist()))) == len(base)  # no neuron twice
        assert random_set.stands_for == "some class" and random_set.kind == "random"
    assert len({tuple(map(tuple, r.neurons.tolist())) for r in first}) > 1  # seeds differ
    assert torch.equal(same_layer_random(base, 16, 2).neurons, first[2].neurons)  # reproducible
    sample = sample_set(base, 4, seed=1)
    assert len(sample) == 4 and set(map(tuple, sample.neurons.tolist())) <= set(map(tuple, base.neurons.tolist()))
    assert parse_class("conditional_depletion") == CONDITIONAL_DEPLETION


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_against_explicit_resamples(ties):
    """Means and lower medians of document resamples, against concatenating the drawn documents' tokens."""
    gen = torch.Generator().manual_seed(3)
    documents = torch.tensor([4] * 5 + [9] * 2 + [1] * 6 + [7] * 3 + [2] * 11 + [0] * 1)
    values = torch.randn(len(documents), generator=gen)
    if ties:  # like rank differences: few distinct values
        values = torch.randint(-2, 3, (len(documents),), generator=gen).float()
    boot = Bootstrap.of(documents, 50, seed=11, level=0.9)
    order = torch.unique(documents)
    means, medians = boot.means(values), boot.medians(values)
    for r in range(50):
        picked = torch.cat([values[documents == order[g]].repeat(int(boot.weights[r, g]))
                            for g in range(len(order))])
        assert float(means[r]) == pytest.approx(float(picked.double().mean()), abs=1e-9)
        assert float(medians[r]) == float(picked.median())


def test_frequency_by_class_against_direct_means():
    gen = torch.Generator().manual_seed(0)
    gate_open = torch.rand(3, 20, generator=gen, dtype=torch.float64)
    signs = torch.rand(3, 20, 4, generator=gen, dtype=torch.float64)
    signs /= signs.sum(-1, keepdim=True)
    categories = torch.full((3, 20), ORTHOGONAL)
    categories[0, :4] = DEPLETION
    categories[2, 10:12] = DEPLETION
    tables = class_frequencies(gate_open, signs, categories, range(5))
    row = tables.gate_open.set_index("class").loc["depletion"]
    direct = torch.cat([gate_open[0, :4], gate_open[2, 10:12]]).mean()
    assert row["neurons"] == 6 and row["gate_open"] == pytest.approx(float(direct))
    per_seed = tables.per_seed["depletion"]
    assert len(per_seed) == 5 and row["random_mean"] == pytest.approx(float(per_seed.mean()))
    assert set(tables.gate_open["class"]) == {"depletion", "orthogonal output", "all neurons"}
    sign_row = tables.signs.set_index("class").loc["depletion"]
    assert sign_row.iloc[1:5].sum() == pytest.approx(1.0)


def test_command_line_resumes_and_shares_the_baseline(ablation_world, tmp_path, capsys):
    import pandas as pd

    whole = tmp_path / "whole"
    for results_dir in (whole, tmp_path / "resumed"):
        (results_dir / "local" / "llama").mkdir(parents=True)
        (results_dir / "local" / "llama" / "data.pt").write_bytes(ablation_world["results"].path.read_bytes())
    assert ablate(ablation_world, whole, ["--conditional", "gate-post+", "--mode", "mean"]) == 0
    folder = whole / "local" / "llama" / "ablation" / "data"
    frame = pd.read_csv(folder / "ablation.csv")
    assert len(frame) == 2 * 3  # (depletion + 2 random) x (everywhere, gate-post+)
    assert all((folder / f"ablation.{ext}").exists() for ext in ("md", "pdf", "png"))
    resumed = tmp_path / "resumed"
    assert ablate(ablation_world, resumed, ["--conditional", "gate-post+", "--mode", "mean", "--stop_after_sets", "2"]) == 0
    out_folder = resumed / "local" / "llama" / "ablation" / "data"
    baseline_time = (out_folder / "baseline.pt").stat().st_mtime_ns
    assert len(load_artifact(out_folder / "sets.pt")["sets"]) == 2
    capsys.readouterr()
    assert ablate(ablation_world, resumed, ["--conditional", "gate-post+", "--mode", "mean"]) == 0
    assert capsys.readouterr().out.count("reusing") == 2
    assert (out_folder / "baseline.pt").stat().st_mtime_ns == baseline_time  # one baseline for every set
    pd.testing.assert_frame_equal(pd.read_csv(out_folder / "ablation.csv"),
                                  frame, check_exact=False, rtol=1e-9)
    # more sets later: the baseline and the finished sets are reused
    assert ablate(ablation_world, resumed, ["--mode", "mean"], classes=("depletion", "conditional_depletion")) == 0
    assert (out_folder / "baseline.pt").stat().st_mtime_ns == baseline_time
    assert len(pd.read_csv(out_folder / "ablation.csv")) == 6 + 3


def test_frequency_command_line(ablation_world, tmp_path):
    results_dir = tmp_path / "freq"
    (results_dir / "local" / "llama").mkdir(parents=True)
    (results_dir / "local" / "llama" / "data.pt").write_bytes(ablation_world["results"].path.read_bytes())
    argv = ["--model", str(ablation_world["folder"]), "--datadir", str(ablation_world["datadir"]), "--activations", "acts",
            "--results_dir", str(results_dir), "--random_seeds", "3"]
    assert run_main(e_frequency.main, argv) == 0
    folder = results_dir / "local" / "llama" / "frequency"
    assert all((folder / name).exists() for name in ("frequency.csv", "frequency.md", "sign_frequencies.csv", "frequency.png"))


def test_bad_inputs(ablation_world, tiny_models, tmp_path, capsys):
    datadir = ablation_world["datadir"]
    results_dir = tmp_path / "bad"
    (results_dir / "local" / "llama").mkdir(parents=True)
    (results_dir / "local" / "llama" / "data.pt").write_bytes(ablation_world["results"].path.read_bytes())

    def fails(argv, match, model=None):
        before = sorted(p for root in (datadir, results_dir) for p in root.rglob("*"))
        capsys.readouterr()
        base = ["--model", str(model or ablation_world["folder"]), "--datadir", str(datadir), "--activations", "acts",
                "--results_dir", str(results_dir), "--device", "cpu"]
        assert run_main(e_ablate.main, base + argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and match in err, err
        assert sorted(p for root in (datadir, results_dir) for p in root.rglob("*")) == before

    fails(["--classes", "deplection"], "valid classes: enrichment, atypical_enrichment")
    fails(["--classes", "enrichment"], "no neurons in this set")
    fails(["--classes"], "no neurons to ablate")
    fails(["--classes", "depletion", "--sample_size", "8"], "depletion has 7 neurons")
    fails(["--classes", "depletion", "--conditional", "gate+lin+"], "unknown sign combination")
    fails(["--mode", "mean", "--dataset", "other"], "statistics of the dataset")
    fails([], "statistics of local/llama", model=tiny_models["mistral"])
    with hold_lock(results_dir / "local" / "llama" / "ablation" / "data"):  # another run writes this folder now
        fails(["--classes", "depletion"], "is being written by process")


def test_roles_from_casestudies(ablation_world, tmp_path, capsys):
    import pandas as pd

    from gated_core.artifacts import PROJECT_TAG, save_artifact
    from wcos_casestudies.section6 import ROLES_KIND

    results_dir = tmp_path / "roles"
    folder = results_dir / "local" / "llama"
    folder.mkdir(parents=True)
    (folder / "data.pt").write_bytes(ablation_world["results"].path.read_bytes())
    capsys.readouterr()
    assert ablate(ablation_world, results_dir, ["--roles", "prediction", "--random_seeds", "0"], classes=()) == 2
    assert "run wcos_casestudies/casestudies.py" in capsys.readouterr().err
    prediction = torch.zeros(2, ablation_world["model"].config.intermediate_size, dtype=torch.bool)
    prediction[1, [4, 8, 15]] = True
    masks = {"prediction": prediction, "suppression": torch.zeros_like(prediction)}
    meta = {"project": PROJECT_TAG, "kind": ROLES_KIND, "model": "local/llama"}
    # roles.pt of other weights (or of a version that recorded none) are never used: one reader checks them
    for fingerprint, match in ((None, "records no weights fingerprint"), ("0" * 16, "holds the roles of other weights")):
        save_artifact({"meta": {**meta, "weights_fingerprint": fingerprint}, "roles": masks}, folder / "roles.pt")
        assert ablate(ablation_world, results_dir, ["--roles", "prediction"], classes=()) == 2
        assert match in capsys.readouterr().err
    save_artifact({"meta": {**meta, "weights_fingerprint": ablation_world["results"].fingerprint}, "roles": masks}, folder / "roles.pt")
    assert ablate(ablation_world, results_dir, ["--roles", "predictoin"], classes=()) == 2
    assert "roles.pt has: prediction, suppression" in capsys.readouterr().err
    assert ablate(ablation_world, results_dir, ["--roles", "prediction", "--random_seeds", "1"], classes=()) == 0
    frame = pd.read_csv(folder / "ablation" / "data" / "ablation.csv", keep_default_na=False)
    assert list(frame["set"]) == ["prediction", "random(prediction) seed 0"] and list(frame["neurons"]) == [3, 3]
    assert list(frame["kind"]) == ["role", "random"]


def test_frequency_refuses_statistics_of_another_model(ablation_world, tiny_models, tmp_path, capsys):
    argv = ["--model", str(tiny_models["mistral"]), "--datadir", str(ablation_world["datadir"]), "--activations", "acts",
            "--results_dir", str(tmp_path)]
    capsys.readouterr()
    assert run_main(e_frequency.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "statistics of local/llama" in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())
