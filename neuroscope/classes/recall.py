"""Factual recall under ablation (the authors' follow-up, its "attributes" experiment): does ablating a set of neurons
hurt the model's recall of facts it knows? Facts in the format of ROME's `known_1000.json` (a JSON list of objects
with `subject`, `prompt` and `attribute`; `known_id` where given), read by `e_recall.py`.

Per fact: the probability and the rank (1: the model's top prediction) of the attribute's first token right after
the prompt (a space before the attribute unless the prompt ends with one), for the model as it is and under each
ablation. A fact whose baseline rank is above `known_rank` is one the model does not know: counted and left out. Per
set: the mean baseline - ablated difference of the probability and of its log, with a bootstrap interval over the
facts, the median rank under the ablation and the share of known facts still at rank 1.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gated_core.cli import check_regular_file
from gated_core.errors import UserError, first_line
from neuroscope.classes.ablation import Ablation, ablation_hooks
from neuroscope.classes.ablation_report import Bootstrap
from neuroscope.classes.generations import prompt_ids

FACT_FIELDS = ("subject", "prompt", "attribute")


@dataclass(frozen=True)
class Fact:
    """One fact: its id, subject, prompt (ending before the attribute) and attribute."""

    known_id: int
    subject: str
    prompt: str
    attribute: str


def read_facts(path: Path) -> list[Fact]:
    """The facts of a known_1000.json-style file; a file that is not UTF-8 JSON, not a list of objects, or has a fact
    without a text `subject`, `prompt` or `attribute`, is a UserError naming the first such fact."""
    check_regular_file(Path(path), "--facts")
    try:
        entries = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--facts {path}: not UTF-8 JSON ({first_line(exc)})") from exc
    if not isinstance(entries, list) or not entries:
        raise UserError(f"--facts {path}: not a list of facts (known_1000.json's format: [{{subject, prompt, attribute}}, ...])")
    facts = []
    for index, entry in enumerate(entries):
        missing = [key for key in FACT_FIELDS if not isinstance(entry, dict) or not isinstance(entry.get(key), str)
                   or not entry[key].strip()]
        if missing:
            raise UserError(f"--facts {path}: fact {index} has no text {', '.join(missing)} (each fact needs "
                            f"{', '.join(FACT_FIELDS)})")
        known_id = entry.get("known_id", index)
        facts.append(Fact(known_id if isinstance(known_id, int) else index, entry["subject"], entry["prompt"], entry["attribute"]))
    return facts


def fact_inputs(tokenizer: Any, fact: Fact) -> tuple[list[int], int]:
    """The prompt's ids (as the dataset's documents begin) and the attribute's first token right after it."""
    attribute = fact.attribute if fact.prompt[-1:].isspace() else " " + fact.attribute
    target = tokenizer(attribute, add_special_tokens=False)["input_ids"]
    if not target:
        raise UserError(f"fact {fact.known_id}: its attribute {fact.attribute!r} has no tokens")
    return prompt_ids(tokenizer, fact.prompt), int(target[0])


@torch.no_grad()
def next_token_scores(model: Any, prompts: list[list[int]], targets: list[int], batch_size: int,
                      pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability [fact] (float64) and rank [fact] (1 + the tokens with a larger logit) of each target after its
    prompt, in batches left-padded with `pad_id`."""
    device = next(model.parameters()).device
    probs, ranks = [], []
    for start in range(0, len(prompts), batch_size):
        batch, wanted = prompts[start:start + batch_size], torch.tensor(targets[start:start + batch_size], device=device)
        width = max(map(len, batch))
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].double()
        chosen = logits.gather(1, wanted[:, None])
        probs.append(torch.softmax(logits, -1).gather(1, wanted[:, None])[:, 0].cpu())
        ranks.append((1 + (logits > chosen).sum(-1)).cpu())
    return torch.cat(probs), torch.cat(ranks)


@dataclass(frozen=True)
class Scores:
    """The probabilities and ranks [fact] of one run (`name` "baseline" or an ablation's key)."""

    name: str
    neurons: int
    probs: torch.Tensor
    ranks: torch.Tensor


def score_all(model: Any, tokenizer: Any, facts: list[Fact], ablations: list[Ablation], means: torch.Tensor | None,
              batch_size: int) -> list[Scores]:
    """The baseline's scores, then each ablation's."""
    inputs = [fact_inputs(tokenizer, fact) for fact in facts]
    prompts, targets = [p for p, _ in inputs], [t for _, t in inputs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    runs = [Scores("baseline", 0, *next_token_scores(model, prompts, targets, batch_size, pad))]
    for ablation in ablations:
        with ablation_hooks(model, ablation, means):
            runs.append(Scores(ablation.key, len(ablation.neurons), *next_token_scores(model, prompts, targets, batch_size, pad)))
    return runs


def recall_table(runs: list[Scores], known: torch.Tensor, resamples: int, seed: int, level: float) -> pd.DataFrame:
    """Per ablated run, over the known facts: mean baseline - ablated probability and log probability with bootstrap
    intervals, the median rank and the share at rank 1 under the ablation."""
    base = runs[0]
    n = int(known.sum())
    bootstrap = Bootstrap.of(torch.arange(n), resamples, seed, level)
    rows = []
    for run in runs[1:]:
        row = {"set": run.name, "neurons": run.neurons, "facts": n}
        for name, before, after in (("prob", base.probs, run.probs), ("log_prob", base.probs.log(), run.probs.log())):
            difference = (before - after)[known]
            low, high = bootstrap.interval(bootstrap.means(difference)) if n else (math.nan, math.nan)
            row.update({f"{name}_diff_mean": float(difference.mean()) if n else math.nan, f"{name}_diff_low": low,
                        f"{name}_diff_high": high})
        row.update({"median_rank": float(run.ranks[known].double().median()) if n else math.nan,
                    "top1_share": float((run.ranks[known] == 1).double().mean()) if n else math.nan})
        rows.append(row)
    return pd.DataFrame(rows)


def facts_table(facts: list[Fact], runs: list[Scores], known: torch.Tensor) -> pd.DataFrame:
    """One row per fact: its id, subject, prompt, attribute, whether the model knows it, and each run's probability
    and rank."""
    frame = pd.DataFrame({"known_id": [f.known_id for f in facts], "subject": [f.subject for f in facts],
                          "prompt": [f.prompt for f in facts], "attribute": [f.attribute for f in facts],
                          "known": known.tolist()})
    for run in runs:
        frame[f"prob {run.name}"] = run.probs.numpy()
        frame[f"rank {run.name}"] = run.ranks.numpy()
    return frame
