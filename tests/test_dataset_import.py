"""A dataset that is already tokenized, in the form of the authors' `sjgerstner/dolma-small` (columns text, id,
input_ids with the tokenizer's first token, attention_mask; rows not sorted by anything), read by
`a_dataset.py --tokenized`: every row kept in its order (so published row numbers stay valid), checked against the
tokenizer, usable by the activation pass; what does not fit is refused in one line, nothing written."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from helpers import CORPUS_TEXTS, PASS_TEXTS, refused, run_pass, succeeds

from gated_core.fingerprint import tokenizer_fingerprint
from gated_core.models.loading import load_tokenizer
from gated_core.models.sources import resolve_model
from neuroscope import a_dataset
from neuroscope.data.dataset_store import load_tokenized

MAX_LENGTH = 24  # tokens per row at most, the first one included (the published rows: 1024)


def published_rows(tokenizer, texts: list[str]) -> dict[str, list]:
    """Rows as the authors' a_dataset.py writes them: the document's first token (BOS, or EOS where there is none),
    then its text's tokens, cut at MAX_LENGTH, an attention mask of ones, the source's id and text kept."""
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = [[first, *tokenizer(text, add_special_tokens=False)["input_ids"]][:MAX_LENGTH] for text in texts]
    return {"id": [f"doc-{n}" for n in range(len(texts))], "text": texts, "input_ids": ids,
            "attention_mask": [[1] * len(row) for row in ids]}


@pytest.fixture(scope="module")
def published(tiny_models, tmp_path_factory):
    """The same rows saved by save_to_disk and as two parquet shards, in an order that is neither sorted nor the
    texts' (so that a reader that sorts or shuffles is caught)."""
    model = tiny_models["llama"]
    tokenizer = load_tokenizer(resolve_model(str(model)))
    texts = [PASS_TEXTS[i % len(PASS_TEXTS)] + f" ({i})" for i in (5, 2, 7, 0, 3, 6, 1, 4)] + CORPUS_TEXTS[:3]
    rows = published_rows(tokenizer, texts)
    root = tmp_path_factory.mktemp("published")
    table = datasets.Dataset.from_dict(rows)
    table.save_to_disk(str(root / "saved"))
    (root / "parquet").mkdir()
    half = len(texts) // 2
    table.select(range(half)).to_parquet(str(root / "parquet" / "train-00000.parquet"))
    table.select(range(half, len(texts))).to_parquet(str(root / "parquet" / "train-00001.parquet"))
    return {"model": model, "tokenizer": tokenizer, "rows": rows, "root": root}


def import_args(datadir: Path, name: str, dataset: Path, model: Path, *extra) -> list:
    return ["--datadir", datadir, "--save_to", name, "--tokenized", "--dataset", dataset, "--tokenizer", model, *extra]


@pytest.mark.parametrize("form", ["saved", "parquet"])
def test_every_row_is_kept_in_its_order(published, tmp_path, form):
    succeeds(a_dataset.main, import_args(tmp_path, "docs", published["root"] / form, published["model"]))
    dataset, meta = load_tokenized(tmp_path / "docs")
    assert dataset["input_ids"] == published["rows"]["input_ids"]  # row n is the published row n
    assert dataset["length"] == [len(ids) for ids in published["rows"]["input_ids"]]
    assert all(set(mask) == {1} for mask in dataset["attention_mask"])
    tokenizer = published["tokenizer"]
    assert meta["tokenizer_fingerprint"] == tokenizer_fingerprint(tokenizer)
    assert meta["bos_token_id"] == published["rows"]["input_ids"][0][0]
    assert meta["documents"] == len(published["rows"]["text"])
    assert meta["tokens"] == sum(map(len, published["rows"]["input_ids"]))


def test_padding_is_cut_and_the_pass_runs_on_the_rows(published, tmp_path):
    rows = dict(published["rows"])
    rows["input_ids"] = [ids + [-100] * (MAX_LENGTH - len(ids)) for ids in rows["input_ids"]]  # padding: not an id
    rows["attention_mask"] = [[1] * len(ids) + [0] * (MAX_LENGTH - len(ids)) for ids in published["rows"]["input_ids"]]
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "padded"))
    succeeds(a_dataset.main, import_args(tmp_path, "data", tmp_path / "padded", published["model"]))
    dataset, _ = load_tokenized(tmp_path / "data")
    assert dataset["input_ids"] == published["rows"]["input_ids"]
    assert run_pass(published["model"], tmp_path, "acts") == 0  # the activation pass reads it as its own


def write_rows(folder: Path, rows: dict[str, list]) -> Path:
    datasets.Dataset.from_dict(rows).save_to_disk(str(folder))
    return folder


def shifted(rows: dict[str, list], vocab: int) -> dict[str, list]:
    """The rows with every id but the first moved by one: what another tokenizer of the same size might have made."""
    return {**rows, "input_ids": [[ids[0], *((i + 1) % vocab for i in ids[1:])] for ids in rows["input_ids"]]}


def test_what_does_not_fit_is_refused_in_one_line(published, tmp_path):
    rows, model, vocab = published["rows"], published["model"], len(published["tokenizer"])
    cases = {
        "other tokenizer": (write_rows(tmp_path / "shifted", shifted(rows, vocab)), (),
                            "row 0: its ids are not what the tokenizer makes of its 'text'"),
        "ids beyond the vocabulary": (write_rows(tmp_path / "beyond", {
            **rows, "input_ids": [[*ids, vocab] for ids in rows["input_ids"]],
            "attention_mask": [[*mask, 1] for mask in rows["attention_mask"]]}), (), f"outside the tokenizer's vocabulary of {vocab}"),
        "an empty row": (write_rows(tmp_path / "empty", {**rows, "input_ids": [[], *rows["input_ids"][1:]],
                                                         "attention_mask": [[], *rows["attention_mask"][1:]]}), (),
                         "row 0 has no tokens"),
        "no ids": (write_rows(tmp_path / "texts", {"text": rows["text"]}), (), "no 'input_ids' column"),
        "no rows": (write_rows(tmp_path / "none", {key: value[:0] for key, value in rows.items()}), (), "the tokenized dataset has no rows"),
        "a mask with holes": (write_rows(tmp_path / "holes", {**rows, "attention_mask": [[1, 0, *m[2:]] for m in
                                                                                           rows["attention_mask"]]}),
                              (), "row 0: its attention mask is not ones then zeros"),
        "tokenizing flags": (published["root"] / "saved", ("--streaming", "--save_all"),
                             "--tokenized keeps every row as it is: leave out --streaming, --save_all"),
    }
    for name, (dataset, extra, message) in cases.items():
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        line = refused(a_dataset.main, import_args(out, "docs", dataset, model, *extra), out, message)
        assert not (out / "docs").exists(), name
        assert line.count("\n") == 0, name


def test_rows_without_text_are_checked_by_their_ids_with_a_note(published, tmp_path):
    rows = {key: value for key, value in published["rows"].items() if key != "text"}
    outcome = succeeds(a_dataset.main, import_args(tmp_path, "docs", write_rows(tmp_path / "ids", rows), published["model"]))
    assert "carry no 'text' column" in outcome.err
    assert load_tokenized(tmp_path / "docs")[0]["input_ids"] == rows["input_ids"]
