"""Section 6 / Appendix E outputs that the paper's choices rest on: every last-layer entropy score (roles.pt, CSV, box
plot) and the prediction/suppression threshold (a warning when it is not selective, --min_kurtosis)."""

from __future__ import annotations

import pandas as pd
import torch
from helpers import run_casestudies

from gated_core.artifacts import load_artifact
from gated_core.models.sources import resolve_model
from wcos_casestudies import roles as R
from wcos_casestudies import section6
from wcos_casestudies.results import ModelResults, Settings


def _moments(kurtosis: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"kurtosis": kurtosis, "skew": torch.ones_like(kurtosis), "variance": torch.ones_like(kurtosis)}


def test_min_kurtosis_floor_and_selectivity_warning():
    gen = torch.Generator().manual_seed(0)
    kurtosis = torch.rand(4, 50, generator=gen, dtype=torch.float64) * 2  # Gaussian-like neurons: 0..2
    kurtosis[3, :3] = torch.tensor([40.0, 12.0, 6.0])  # three heavy-tailed neurons in the last layer
    gatelin = torch.ones(4, 50, dtype=torch.float64)
    partition = torch.zeros(4, 50, dtype=torch.bool)
    partition[0, :5] = True
    rule = float(kurtosis[partition].max())
    prediction, suppression, threshold = R.prediction_suppression(_moments(kurtosis), gatelin, partition)
    assert threshold == rule < 2 and int(prediction.sum()) == int((kurtosis > rule).sum()) > 3
    warning = R.selectivity_warning(prediction | suppression, threshold)
    total = int((kurtosis > rule).sum())
    assert warning.startswith("warning:") and f"{threshold:.2f}" in warning and f"{total} of 200 neurons" in warning
    assert f"{int((kurtosis[1:] > rule).sum())} of them in the last three layers" in warning and "--min_kurtosis" in warning
    prediction, suppression, threshold = R.prediction_suppression(_moments(kurtosis), gatelin, partition, min_kurtosis=5.0)
    assert threshold == 5.0 and prediction.nonzero().tolist() == [[3, 0], [3, 1], [3, 2]]
    assert R.selectivity_warning(prediction | suppression, threshold) is None
    # a floor below the rule's threshold changes nothing: the paper's rule stays the default
    assert R.prediction_suppression(_moments(kurtosis), gatelin, partition, min_kurtosis=rule / 2)[2] == rule


def test_roles_keep_every_entropy_score_and_the_threshold_used(tiny_models, tmp_path):
    source = resolve_model(str(tiny_models["qwen2"]))
    results = ModelResults(source, Settings(), root=tmp_path)
    plain = section6.compute_roles(results, section6.RoleOptions(attention=False))
    info = plain.info
    assert info["kurtosis_threshold"] == info["kurtosis_rule"] and info["min_kurtosis"] is None
    assert info["kurtosis_warning"] is not None  # random weights: Gaussian-like vocabulary distributions
    stored = load_artifact(results.folder / "roles.pt")
    scores = stored["entropy_scores"]
    assert scores.shape == (96,) and torch.equal(scores, plain.entropy_scores)
    assert set(plain.roles["entropy"][-1].nonzero().flatten().tolist()) == set(torch.topk(scores, 2).indices.tolist())
    assert stored["meta"]["kurtosis_threshold"] == info["kurtosis_threshold"]
    floored = section6.compute_roles(results, section6.RoleOptions(attention=False, min_kurtosis=50.0))
    assert floored.info["kurtosis_threshold"] == 50.0 and floored.info["kurtosis_rule"] == info["kurtosis_rule"]
    assert floored.info["kurtosis_warning"] is None
    assert int(floored.roles["prediction"].sum() + floored.roles["suppression"].sum()) < \
        int(plain.roles["prediction"].sum() + plain.roles["suppression"].sum())
    assert load_artifact(results.folder / "roles.pt")["meta"]["min_kurtosis"] == 50.0


def test_casestudies_writes_the_entropy_box_plot_and_warns(tiny_models, tmp_path, monkeypatch, capsys):
    """casestudies.py (run in this process as `python casestudies.py ...` runs it) on a model whose threshold needs a
    warning: the entropy scores' table and box plot, and the warning."""
    capsys.readouterr()
    run_casestudies(monkeypatch, ["--model", tiny_models["mistral"], "--results_dir", tmp_path, "--skip_attention", "--n_entropy",
                                  "3", "--top_k", "3"])
    out = capsys.readouterr().out
    assert "warning: the prediction/suppression threshold is an excess kurtosis of" in out
    folder = tmp_path / "local" / "mistral"
    table = pd.read_csv(folder / "entropy_scores.csv", dtype={"neuron": str})
    assert len(table) == 96 and list(table["rank"]) == list(range(1, 97))
    assert table["score"].is_monotonic_decreasing and table["chosen"].sum() == 3 and table["chosen"][:3].all()
    assert all(name.startswith("1.") for name in table["neuron"])
    stored = load_artifact(folder / "roles.pt")
    assert [int(i) for i in table["index"][:3]] == torch.topk(stored["entropy_scores"], 3).indices.tolist()
    for suffix in ("pdf", "png"):
        assert (folder / f"entropy_scores.{suffix}").stat().st_size > 1000
    assert "entropy_scores.csv" in out


def test_attention_roles_of_a_tokenizer_without_bos_read_eos(tiny_models, tmp_path):
    """OLMo's tokenizer has no BOS: TransformerLens puts EOS first, as a_dataset.py does, and the attention
    (de)activation step runs the model on that token."""
    import shutil

    from gated_core.models.loading import load_bridge
    from wcos_casestudies.synthetic import byte_tokenizer

    folder = tmp_path / "olmo"
    shutil.copytree(tiny_models["olmo"], folder)
    tokenizer = byte_tokenizer(folder)
    tokenizer.bos_token = None
    tokenizer.save_pretrained(folder)
    bridge = load_bridge(resolve_model(str(folder)))
    assert bridge.tokenizer.bos_token_id == tokenizer.eos_token_id == 257
    directions = R.bos_query_directions(bridge)
    assert directions.shape[:2] == (2, 4) and torch.isfinite(directions).all()
