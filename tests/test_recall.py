"""Factual recall under ablation (`e_recall.py`, `neuroscope/classes/recall.py`): each fact's probability and rank
against an independent forward pass of one prompt (no batch, no padding); a fact whose attribute is the model's top
token has rank 1; the per-set table against the per-fact table it summarises; facts the model does not know left out;
bad facts files refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import refused, succeeds

from gated_core.models.loading import load_hf_model
from gated_core.models.sources import resolve_model
from neuroscope import e_recall
from neuroscope.classes.ablation import Ablation, ablation_hooks
from neuroscope.classes.generations import prompt_ids
from neuroscope.classes.neuron_sets import NeuronSet
from neuroscope.classes.recall import Fact, fact_inputs, score_all

PROMPTS = ["The gate of a gated neuron is ", "A neuron writes to the ", "Short ", "The linear input scales the output of ",
           "Tokens flow through ", "Weights of the model are ", "The residual stream carries ", "Layer after layer, "]


@pytest.fixture(scope="module")
def tiny(tiny_models):
    model, tokenizer = load_hf_model(resolve_model(str(tiny_models["llama"])))
    return {"folder": tiny_models["llama"], "model": model, "tokenizer": tokenizer}


@torch.no_grad()
def one_prompt(model, ids: list[int], target: int) -> tuple[float, int]:
    """Probability and rank of `target` after one prompt, by itself."""
    logits = model(torch.tensor([ids])).logits[0, -1].double()
    return float(torch.softmax(logits, -1)[target]), int(1 + (logits > logits[target]).sum())


def known_facts(model, tokenizer) -> list[Fact]:
    """Facts whose attribute is the model's own top token after the prompt (where that token reads back as itself)."""
    facts = []
    for index, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            top = int(model(torch.tensor([prompt_ids(tokenizer, prompt)])).logits[0, -1].argmax())
        text = tokenizer.decode([top])
        if text.strip() and tokenizer(text, add_special_tokens=False)["input_ids"][:1] == [top]:
            facts.append(Fact(index, prompt.split()[0], prompt, text))
    return facts


def test_scores_against_one_prompt_at_a_time(tiny):
    model, tokenizer = tiny["model"], tiny["tokenizer"]
    facts = [Fact(i, p.split()[0], p.rstrip(), "neuron") for i, p in enumerate(PROMPTS)] + known_facts(model, tokenizer)
    layer_one = Ablation(NeuronSet("layer 1", torch.tensor([[1, n] for n in range(0, 96, 2)]), "class"))
    runs = score_all(model, tokenizer, facts, [layer_one], None, batch_size=3)  # left-padded batches
    for run, hooks in ((runs[0], None), (runs[1], layer_one)):
        with ablation_hooks(model, hooks):
            expected = [one_prompt(model, *fact_inputs(tokenizer, fact)) for fact in facts]
        assert run.probs.tolist() == pytest.approx([p for p, _ in expected], rel=1e-5, abs=1e-9)
        assert run.ranks.tolist() == [r for _, r in expected]
    known = known_facts(model, tokenizer)
    assert len(known) >= 2
    assert score_all(model, tokenizer, known, [], None, batch_size=4)[0].ranks.tolist() == [1] * len(known)


def write_facts(path: Path, facts) -> Path:
    path.write_text(json.dumps(facts))
    return path


def test_the_script_writes_the_tables(tiny, tmp_path):
    model, tokenizer = tiny["model"], tiny["tokenizer"]
    known = known_facts(model, tokenizer)
    unknown = [{"known_id": 100 + i, "subject": "x", "prompt": p.rstrip(), "attribute": "qqqq"} for i, p in enumerate(PROMPTS[:3])]
    facts = write_facts(tmp_path / "known_facts.json", [{"known_id": f.known_id, "subject": f.subject, "prompt": f.prompt,
                                                          "attribute": f.attribute} for f in known] + unknown)
    outcome = succeeds(e_recall.main, ["--model", tiny["folder"], "--facts", facts, "--results_dir", tmp_path / "r",
                                       "--classes", "depletion", "--threshold", "0.05", "--random_seeds", "1",
                                       "--bootstrap", "200", "--batch_size", "3"])
    folder = next((tmp_path / "r").rglob("ablation/recall/known_facts"))
    per_fact = pd.read_csv(folder / "facts.csv")
    table = pd.read_csv(folder / "recall.csv").set_index("set")
    assert per_fact["known"].sum() == len(known) and not per_fact["known"].tail(len(unknown)).any()  # "qqqq": not known
    assert f"{len(known)} of {len(known) + len(unknown)} facts known" in outcome.out
    kept = per_fact[per_fact["known"]]
    for name, row in table.iterrows():  # each set's summary against the per-fact values it summarises
        difference = kept["prob baseline"] - kept[f"prob {name}"]
        assert row["facts"] == len(kept) and row["prob_diff_mean"] == pytest.approx(difference.mean(), abs=1e-6)
        assert row["prob_diff_low"] <= row["prob_diff_mean"] + 1e-9 <= row["prob_diff_high"] + 2e-9
        assert row["top1_share"] == pytest.approx((kept[f"rank {name}"] == 1).mean())
    assert list(table.index) == ["depletion | zero | all tokens", "random(depletion) seed 0 | zero | all tokens"]
    assert (folder / "recall.md").is_file()


@pytest.mark.parametrize(("content", "message"), [
    (b'[{"subject": "a", "prompt": "b"}]', "fact 0 has no text attribute"),
    (b'[{"subject": "a", "prompt": "b", "attribute": "c"}, {"prompt": 3, "attribute": "d"}]', "fact 1 has no text subject, prompt"),
    (b"[]", "not a list of facts"),
    (b"{not json", "not UTF-8 JSON"),
])
def test_a_bad_facts_file_is_refused_in_one_line(tiny, tmp_path, content, message):
    facts = tmp_path / "facts.json"
    facts.write_bytes(content)
    (tmp_path / "r").mkdir()
    refused(e_recall.main, ["--model", tiny["folder"], "--facts", facts, "--results_dir", tmp_path / "r"], tmp_path / "r", message)
