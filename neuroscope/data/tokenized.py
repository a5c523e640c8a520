"""A dataset that is already tokenized (the authors' `sjgerstner/dolma-small`, 20M tokens of Dolma tokenized for OLMo,
or any dataset with an `input_ids` column), read into this project's dataset (`a_dataset.py --tokenized`) with every row
kept in its order, so that the row numbers that published neuron data names its examples by stay valid.

The rows are checked against the tokenizer before anything is written: every id within its vocabulary, no empty row,
and, where the rows carry their text, the first CHECKED_ROWS rows' ids are what the tokenizer makes of that text (after
the first token of the document, cut where the row ends): a dataset tokenized with another tokenizer is refused in one
line. The dataset then records the tokenizer's fingerprint as `a_dataset.py` does, so that every later stage checks it
against the model's.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

from gated_core.artifacts import made_from
from gated_core.errors import UserError, first_line
from gated_core.fingerprint import tokenizer_fingerprint
from neuroscope.data.tokenization import document_start

IDS = "input_ids"  # the column of token ids
MASK = "attention_mask"  # where present: 1 for a real token, 0 for padding at the row's end
CHECKED_ROWS = 8  # rows whose text is tokenized again to check the ids
TABLE_SUFFIXES = (".parquet", ".arrow")


def open_rows(dataset: str, split: str, what: str = "tokenized dataset") -> Any:
    """The rows of a Hugging Face dataset, in order: a folder written by `save_to_disk`, a .parquet or .arrow file or a
    folder of them (files in name order), or a hub dataset in the local cache; a UserError naming `what` it should be
    where it cannot be read (a damaged file, no rows)."""
    import datasets

    path = Path(dataset)
    try:
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            rows = datasets.load_from_disk(str(path))
            rows = rows[split] if isinstance(rows, datasets.DatasetDict) else rows
        elif path.exists():
            files = sorted(p for p in (path.iterdir() if path.is_dir() else [path]) if p.suffix in TABLE_SUFFIXES)
            if not files:
                raise UserError(f"{path}: no dataset saved by save_to_disk, and no .parquet or .arrow files")
            rows = datasets.load_dataset(files[0].suffix[1:], data_files=[str(f) for f in files], split="train")
        else:
            rows = datasets.load_dataset(dataset, split=split)
    except IndexError as exc:  # `datasets` reading a saved dataset of no rows
        raise UserError(f"{dataset}: the {what} has no rows ({first_line(exc)})") from exc
    except (OSError, ValueError, KeyError, datasets.exceptions.DatasetNotFoundError,
            datasets.exceptions.DatasetGenerationError) as exc:
        raise UserError(f"{dataset}: cannot read it as a {what} ({first_line(exc)})") from exc
    return rows


def open_tokenized(dataset: str, split: str) -> Any:
    """The rows of a tokenized dataset, in order (`open_rows`), refused without an `input_ids` column."""
    rows = open_rows(dataset, split)
    if IDS not in rows.column_names:
        raise UserError(f"{dataset}: no {IDS!r} column (columns: {', '.join(rows.column_names)}): not a tokenized dataset; "
                        "leave out --tokenized to tokenize its text")
    return rows


def row_lengths(rows: Any) -> list[int]:
    """Each row's number of real tokens: its ids, or where it has an attention mask, the ones of the mask (which must
    come first: padding only at the end)."""
    import numpy as np
    import pyarrow.compute as pc

    table = rows.with_format("arrow")
    lengths = pc.list_value_length(table[IDS]).to_numpy(zero_copy_only=False)
    if MASK not in rows.column_names:
        return lengths.tolist()
    masks = table[MASK]
    ones = np.array([int(pc.sum(pc.list_flatten(masks.slice(i, 1))).as_py() or 0) for i in range(len(masks))])
    padded = np.flatnonzero(ones != lengths).tolist()  # rows with padding: ones first, then only zeros
    for index, row in zip(padded, rows.select_columns([MASK]).select(padded)):
        mask, length = row[MASK], int(ones[index])
        if len(mask) != lengths[index] or not all(mask[:length]) or any(mask[length:]):
            raise UserError(f"row {index}: its attention mask is not ones then zeros over its ids")
    return ones.tolist()


def check_ids(rows: Any, lengths: list[int], tokenizer: Any) -> dict[str, Any]:
    """Refuse an empty row or an id outside the tokenizer's vocabulary; returns what every row starts with
    (`document_start`'s entries: the tokenizer's BOS, or EOS where it has none, when every row starts so)."""
    import pyarrow.compute as pc

    empty = [index for index, length in enumerate(lengths) if length == 0]
    if empty:
        raise UserError(f"row {empty[0]} has no tokens ({len(empty)} empty rows): every row is kept in its order, so none "
                        "may be empty")
    column = rows.with_format("arrow")[IDS]
    extremes = pc.min_max(pc.list_flatten(column)).as_py()
    low, high = extremes["min"], extremes["max"]
    firsts = set(pc.unique(pc.list_element(column, 0)).to_pylist())
    if low < 0 or high >= len(tokenizer):
        raise UserError(f"token ids from {low} to {high}, outside the tokenizer's vocabulary of {len(tokenizer)}: tokenized "
                        "with another tokenizer (--tokenizer names the model whose tokenizer made them)")
    start = document_start(tokenizer, tokenizer.bos_token_id is not None or tokenizer.eos_token_id is not None)
    return {**start, "max_token_id": int(high)} if firsts == {start["bos_token_id"]} else \
        {**document_start(tokenizer, False), "max_token_id": int(high)}


def check_text(rows: Any, lengths: list[int], tokenizer: Any, text_field: str, bos: int | None) -> bool:
    """Where the rows carry their text: the first CHECKED_ROWS rows' ids (after `bos`) are the tokenizer's tokens of
    it, cut where the row ends; a UserError at the first difference. False where there is no text to check with."""
    if text_field not in rows.column_names:
        return False
    for index, row in enumerate(rows.select(range(min(CHECKED_ROWS, len(rows))))):
        if not isinstance(row[text_field], str):  # a row without its text: nothing to check it with
            continue
        ids = list(row[IDS][:lengths[index]])
        ids = ids[1:] if bos is not None else ids
        expected = tokenizer(row[text_field], add_special_tokens=False)[IDS][:len(ids)]
        if ids != expected:
            at = next((i for i, (a, b) in enumerate(zip(ids, expected)) if a != b), min(len(ids), len(expected)))
            raise UserError(f"row {index}: its ids are not what the tokenizer makes of its {text_field!r} (first difference "
                            f"at token {at}: {ids[at] if at < len(ids) else 'end'} against "
                            f"{expected[at] if at < len(expected) else 'end'}): tokenized with another tokenizer than "
                            "--tokenizer's")
    return True


def import_tokenized(rows: Any, tokenizer: Any, text_field: str = "text") -> tuple[Any, dict[str, Any]]:
    """This project's dataset of tokenized `rows` (`input_ids`, `attention_mask`, `length`), every row in its order, and
    its metadata (as `build_dataset` writes it); checked against `tokenizer` first (`check_ids`, `check_text`)."""
    import datasets

    if len(rows) == 0:
        raise UserError("the tokenized dataset has no rows (another --split?)")
    lengths = row_lengths(rows)
    ids = rows.select_columns([IDS]).add_column("length", lengths)
    dataset = ids.map(cut_rows, batched=True, remove_columns=ids.column_names, keep_in_memory=True,
                      features=datasets.Features({IDS: datasets.Sequence(datasets.Value("int64")),
                                                  MASK: datasets.Sequence(datasets.Value("int8")),
                                                  "length": datasets.Value("int32")}), new_fingerprint=uuid.uuid4().hex)
    start = check_ids(dataset, lengths, tokenizer)  # on the rows cut to their tokens: padding is not checked
    max_token_id = start.pop("max_token_id")
    dataset = dataset.cast_column(IDS, datasets.Sequence(datasets.Value("int32")))
    if not check_text(rows, lengths, tokenizer, text_field, start["bos_token_id"]):
        print(f"note: the rows carry no {text_field!r} column: their ids were checked against the tokenizer's vocabulary "
              "only, not against their text", file=sys.stderr)
    meta = {"documents": len(dataset), "tokens": int(sum(lengths)), "goal_tokens": None, "reached_goal": True,
            "max_length": max(lengths), **start, "padding": False, "overflow": False, "shuffle_seed": None,
            "vocab_size": len(tokenizer), **made_from(tokenizer=tokenizer_fingerprint(tokenizer)),
            "max_token_id": max_token_id, "documents_read": len(dataset), "duplicates_dropped": None,
            "selection": "imported: every row of a tokenized dataset, in its order"}
    return dataset, meta


def cut_rows(batch: dict[str, list]) -> dict[str, list]:
    """`datasets.map` body: each row's ids cut to its length, an attention mask of ones."""
    cut = [list(ids[:length]) for ids, length in zip(batch[IDS], batch["length"])]
    return {IDS: cut, MASK: [[1] * len(ids) for ids in cut], "length": batch["length"]}
