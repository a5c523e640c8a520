"""Generations under ablation (`e_generate.py`, `neuroscope/classes/generations.py`): the batched greedy baseline equals
an independent one-token-at-a-time argmax loop of the Hugging Face model; an empty ablation reproduces the baseline token
for token; ablating a set changes what its hooks change (checked against the same loop with the set's a zeroed); the
outputs are written; bad prompts files are refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import refused, succeeds

from gated_core.models.loading import load_hf_model
from gated_core.models.sources import resolve_model
from neuroscope import e_generate
from neuroscope.classes.ablation import Ablation, ablation_hooks
from neuroscope.classes.generations import generate_all, prompt_ids
from neuroscope.classes.neuron_sets import NeuronSet

PROMPTS = ["Gated neurons read a direction", "The gate decides; the linear input scales; the output weight writes.",
           "Short.", "A neuron"]  # of different lengths: the batches are left-padded
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def tiny(tiny_models):
    model, tokenizer = load_hf_model(resolve_model(str(tiny_models["llama"])))
    return {"folder": tiny_models["llama"], "model": model, "tokenizer": tokenizer}


@torch.no_grad()
def argmax_loop(model, ids: list[int], new_tokens: int, eos: int | None) -> list[int]:
    """One prompt, no cache, no padding: append the argmax of the last position's logits, one token at a time."""
    ids, out = list(ids), []
    for _ in range(new_tokens):
        token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        ids.append(token)
        out.append(token)
        if token == eos:
            break
    return out


def test_the_baseline_is_the_models_own_greedy_continuation(tiny):
    model, tokenizer = tiny["model"], tiny["tokenizer"]
    for batch_size in (1, 3):
        runs = generate_all(model, tokenizer, PROMPTS, [], None, NEW_TOKENS, batch_size)
        expected = [argmax_loop(model, prompt_ids(tokenizer, p), NEW_TOKENS, tokenizer.eos_token_id) for p in PROMPTS]
        assert runs[0].tokens == expected, batch_size


def test_an_empty_ablation_reproduces_the_baseline_and_a_set_changes_what_it_zeroes(tiny):
    model, tokenizer = tiny["model"], tiny["tokenizer"]
    empty = Ablation(NeuronSet("nothing", torch.zeros((0, 2), dtype=torch.long), "class"))
    layer_one = Ablation(NeuronSet("layer 1", torch.tensor([[1, n] for n in range(96)]), "class"))
    runs = generate_all(model, tokenizer, PROMPTS, [empty, layer_one], None, NEW_TOKENS, 2)
    assert runs[1].tokens == runs[0].tokens and runs[1].neurons == 0
    with ablation_hooks(model, layer_one):  # the same loop, its forward passes under the set's hooks
        expected = [argmax_loop(model, prompt_ids(tokenizer, p), NEW_TOKENS, tokenizer.eos_token_id) for p in PROMPTS]
    assert runs[2].tokens == expected and runs[2].tokens != runs[0].tokens


def write_prompts(path: Path, text: bytes) -> Path:
    path.write_bytes(text)
    return path


def test_the_script_writes_the_generations(tiny, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.txt", "\n".join(PROMPTS).encode() + b"\n\n")
    outcome = succeeds(e_generate.main, ["--model", tiny["folder"], "--prompts", prompts, "--results_dir", tmp_path / "r",
                                         "--classes", "depletion", "--threshold", "0.05", "--random_seeds", "1",
                                         "--max_new_tokens", NEW_TOKENS, "--batch_size", 2, "--naming", "strengthening"])
    folder = next((tmp_path / "r").rglob("ablation/generations/prompts"))
    record = json.loads((folder / "generations.json").read_text())
    baseline = generate_all(tiny["model"], tiny["tokenizer"], PROMPTS, [], None, NEW_TOKENS, 1)[0].tokens
    assert record["prompts"] == PROMPTS and record["runs"][0]["tokens"] == baseline
    assert [run["run"] for run in record["runs"]] == ["baseline", "depletion | zero | all tokens",  # stored: the paper's
                                                      "random(depletion) seed 0 | zero | all tokens"]
    assert record["meta"]["weights_fingerprint"] and record["meta"]["max_new_tokens"] == NEW_TOKENS
    markdown, page = (folder / "generations.md").read_text(), (folder / "generations.html").read_text()
    assert all(f"## {p}" in markdown for p in PROMPTS) and "*weakening \\| zero \\| all tokens*" in markdown
    assert "depletion" not in page and "weakening" in page  # shown: the follow-up's name
    assert "4 prompts" in outcome.out


@pytest.mark.parametrize(("text", "message"), [(b"\n  \n", "no prompt in it"), (b"caf\xe9\n", "not UTF-8 text")])
def test_a_bad_prompts_file_is_refused_in_one_line(tiny, tmp_path, text, message):
    prompts = write_prompts(tmp_path / "prompts.txt", text)
    (tmp_path / "r").mkdir()
    refused(e_generate.main, ["--model", tiny["folder"], "--prompts", prompts, "--results_dir", tmp_path / "r"],
            tmp_path / "r", message)
