"""Generations under ablation (the authors' follow-up, `generations/…/zero_ablation/generated_greedy.txt`): greedy
continuations of the same prompts by the model as it is and with each set of neurons ablated (`e_generate.py`), side
by side, the tokens from the first one that differs from the model's own marked.

A prompt is tokenized as the dataset is (the tokenizer's BOS first, or its EOS where it has none, `document_start`);
prompts run in batches, left-padded; a continuation ends at EOS or after `max_new_tokens` tokens. Greedy decoding is
deterministic: the same prompts, weights and sets give the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gated_core.cli import check_regular_file
from gated_core.errors import UserError, first_line
from gated_core.html import render
from neuroscope.classes.ablation import Ablation, ablation_hooks
from neuroscope.data.tokenization import document_start


def read_prompts(path: Path) -> list[str]:
    """The prompts of a file, one a line (blank lines skipped); a file that is not UTF-8 text, or holds no prompt, is a
    UserError."""
    check_regular_file(Path(path), "--prompts")
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"--prompts {path}: not UTF-8 text ({first_line(exc)})") from exc
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"--prompts {path}: no prompt in it (one prompt a line)")
    return prompts


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """A prompt's token ids as the dataset's documents begin: BOS (or EOS) first, then its tokens."""
    first = document_start(tokenizer, True)["bos_token_id"]
    return [first, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]


@torch.no_grad()
def greedy(model: Any, prompts: list[list[int]], max_new_tokens: int, batch_size: int, pad_id: int,
           eos_id: int | None) -> list[list[int]]:
    """The greedy continuation of each prompt (token ids [prompt]), in batches left-padded with `pad_id`; each ends
    after its EOS (which it keeps) or after `max_new_tokens` tokens."""
    device = next(model.parameters()).device
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                   num_beams=1, pad_token_id=pad_id, eos_token_id=eos_id, temperature=None, top_p=None,
                                   top_k=None)
        out.extend(until_eos(row[width:].tolist(), eos_id) for row in generated)
    return out


def until_eos(tokens: list[int], eos_id: int | None) -> list[int]:
    """The tokens up to and with the first EOS (what follows it is padding)."""
    return tokens[:tokens.index(eos_id) + 1] if eos_id is not None and eos_id in tokens else tokens


@dataclass(frozen=True)
class Continuations:
    """The continuations [prompt] (token ids) of one run: the model's own (`name` "baseline") or under an ablation."""

    name: str
    neurons: int
    tokens: list[list[int]]


def generate_all(model: Any, tokenizer: Any, prompts: list[str], ablations: list[Ablation], means: torch.Tensor | None,
                 max_new_tokens: int, batch_size: int) -> list[Continuations]:
    """The baseline's continuations, then each ablation's."""
    ids = [prompt_ids(tokenizer, prompt) for prompt in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    runs = [Continuations("baseline", 0, greedy(model, ids, max_new_tokens, batch_size, pad, tokenizer.eos_token_id))]
    for ablation in ablations:
        with ablation_hooks(model, ablation, means):
            tokens = greedy(model, ids, max_new_tokens, batch_size, pad, tokenizer.eos_token_id)
        runs.append(Continuations(ablation.key, len(ablation.neurons), tokens))
    return runs


def first_difference(tokens: list[int], baseline: list[int]) -> int | None:
    """The first position where `tokens` differ from the baseline's (None: the same tokens)."""
    for position, (a, b) in enumerate(zip(tokens, baseline)):
        if a != b:
            return position
    return None if len(tokens) == len(baseline) else min(len(tokens), len(baseline))


@dataclass(frozen=True)
class Row:
    """One continuation of one prompt as the outputs show it: its run, the text before its first difference from the
    baseline and from there on (empty where it is the baseline's)."""

    run: str
    neurons: int
    same: str
    different: str


def table(tokenizer: Any, runs: list[Continuations], index: int) -> list[Row]:
    """The rows of one prompt: the baseline, then each ablation's continuation split at its first difference."""
    baseline = runs[0].tokens[index]
    rows = []
    for run in runs:
        tokens = run.tokens[index]
        cut = first_difference(tokens, baseline)
        cut = len(tokens) if cut is None else cut
        rows.append(Row(run.name, run.neurons, tokenizer.decode(tokens[:cut]), tokenizer.decode(tokens[cut:])))
    return rows


def markdown(title: str, prompts: list[str], tables: list[list[Row]]) -> str:
    """The generations as Markdown: per prompt, a line per run, the text from its first difference in bold."""
    lines = [f"# {title}", "", "Greedy continuations; from the first token that differs from the model's own, in **bold**.", ""]
    for prompt, rows in zip(prompts, tables):
        lines += [f"## {escaped(prompt)}", ""]
        for row in rows:
            lines.append(f"- *{escaped(row.run)}* ({row.neurons} neurons): {escaped(row.same)}{bold(escaped(row.different))}")
        lines.append("")
    return "\n".join(lines)


def bold(text: str) -> str:
    """Text in Markdown bold, its white space at either end left outside (where bold cannot begin or end)."""
    core = text.strip()
    if not core:
        return text
    start = text.index(core)
    return f"{text[:start]}**{core}**{text[start + len(core):]}"


def escaped(text: str) -> str:
    """Text for a Markdown line: newlines shown as ⏎, Markdown's marks escaped."""
    for mark in "\\*_`#[]<>|":
        text = text.replace(mark, "\\" + mark)
    return text.replace("\n", "⏎")


def page(title: str, notes: list[str], prompts: list[str], tables: list[list[Row]]) -> str:
    """The generations as a page (`templates/generations.html`): per prompt a table of the runs, the differing text
    marked."""
    return render("neuroscope.classes", "generations.html", title=title, notes=notes, prompts=list(zip(prompts, tables)))
