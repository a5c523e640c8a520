"""Text sources, tokenisation and the tokenized dataset on disk (SPEC 6, `a_dataset.py`).

A tokenized dataset is a Hugging Face `datasets` folder with `input_ids`,
`attention_mask` and `length` (real tokens) columns plus `neuroscope_meta.json` (tokenizer, vocabulary size, counts,
source), written atomically: a half-written dataset is never left under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wcos_casestudies.errors import UserError

SHUFFLE_SEED = 2512800
POOL_PER_MTOKEN = 4000  # documents in the pool per million tokens asked for
EMBEDDED_DATASET = "pydoc"
META_FILE = "neuroscope_meta.json"


def embedded_documents(min_chars: int = 600) -> list[str]:
    """Real English text that ships with Python: the documentation topics of `pydoc_data`,
    split at blank lines into documents of at least `min_chars` characters."""
    from pydoc_data.topics import topics

    documents = []
    for name in sorted(topics):
        current = ""
        for paragraph in (p for p in topics[name].split("\n\n") if p.strip()):
            current = f"{current}\n\n{paragraph}" if current else paragraph
            if len(current) >= min_chars:
                documents.append(current)
                current = ""
        if current:
            documents.append(current)
    return documents


def load_texts(dataset: str, text_field: str = "text", split: str = "train") -> Any:
    """A `datasets.Dataset` with a text column, from the embedded default, local files or the hub."""
    import datasets

    datasets.disable_progress_bars()
    if dataset == EMBEDDED_DATASET:
        return datasets.Dataset.from_dict({text_field: embedded_documents()})
    path = Path(dataset).expanduser()
    if path.exists():
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        kinds = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
        by_kind: dict[str, list[str]] = {}
        for file in files:
            if file.suffix in kinds:
                by_kind.setdefault(kinds[file.suffix], []).append(str(file))
        if len(by_kind) != 1:
            raise UserError(f"{dataset}: expected .txt, .jsonl/.json or .parquet files (one kind), found {sorted(by_kind) or 'none'}")
        kind, names = next(iter(by_kind.items()))
        if kind == "text":  # one document per file
            return datasets.Dataset.from_dict({text_field: [Path(n).read_text(errors="replace") for n in names]})
        loaded = datasets.load_dataset(kind, data_files=names, split="train")
    else:
        try:
            loaded = datasets.load_dataset(dataset, split=split)
        except Exception as exc:  # offline, unknown name, gated: datasets raises many types
            raise UserError(f"dataset {dataset!r} is neither a local file or folder nor loadable from the hub "
                            f"({type(exc).__name__}); use a local .txt/.jsonl/.parquet, or `{EMBEDDED_DATASET}`") from exc
    if text_field not in loaded.column_names:
        raise UserError(f"{dataset}: no {text_field!r} column (columns: {', '.join(loaded.column_names)}); use --text_field")
    return loaded


def tokenize_documents(texts: Iterable[str], tokenizer: Any, max_length: int, add_bos: bool = True,
                       overflow: bool = False) -> Iterable[list[int]]:
    """Token ids of each document: BOS first (when asked), truncated to `max_length` (or split, with `overflow`)."""
    bos = tokenizer.bos_token_id
    if add_bos and bos is None:
        raise UserError("the tokenizer has no BOS token; use --no_bos_token")
    room = max_length - (1 if add_bos else 0)
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = [ids[i:i + room] for i in range(0, len(ids), room)] if overflow else [ids[:room]]
        for piece in pieces:
            row = ([bos] if add_bos else []) + piece
            if row:
                yield row


def build_dataset(texts: Any, tokenizer: Any, mtokens: float | None, max_length: int = 1024, add_bos: bool = True,
                  overflow: bool = False, padding: bool = False, text_field: str = "text") -> tuple[Any, dict[str, Any]]:
    """Shuffle (seed 2512800), take the pool of 4000 x Mtokens documents, tokenize, keep documents in
    order until the token goal is reached (all of them with `mtokens=None`)."""
    import datasets

    shuffled = texts.shuffle(seed=SHUFFLE_SEED)
    goal = None if mtokens is None else int(round(mtokens * 1_000_000))
    if goal is not None:
        shuffled = shuffled.select(range(min(len(shuffled), max(1, int(POOL_PER_MTOKEN * mtokens)))))
    rows: list[list[int]] = []
    total = 0
    for ids in tokenize_documents((row[text_field] for row in shuffled), tokenizer, max_length, add_bos, overflow):
        rows.append(ids)
        total += len(ids)
        if goal is not None and total >= goal:
            break
    if not rows:
        raise UserError("no documents with tokens in the dataset")
    masks = [[1] * len(ids) for ids in rows]
    if padding:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        rows = [ids + [pad] * (max_length - len(ids)) for ids in rows]
        masks = [m + [0] * (max_length - len(m)) for m in masks]
    lengths = [sum(m) for m in masks]
    dataset = datasets.Dataset.from_dict({"input_ids": rows, "attention_mask": masks, "length": lengths})
    meta = {"documents": len(rows), "tokens": total, "goal_tokens": goal, "reached_goal": goal is None or total >= goal,
            "max_length": max_length, "add_bos_token": add_bos, "padding": padding, "overflow": overflow,
            "shuffle_seed": SHUFFLE_SEED, "vocab_size": len(tokenizer), "max_token_id": max(max(r) for r in rows)}
    return dataset, meta


def save_dataset(dataset: Any, meta: dict[str, Any], folder: Path, overwrite: bool = False) -> Path:
    """`save_to_disk` into a temporary folder, add the metadata, then rename into place."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise UserError(f"{folder} exists; choose another --save_to or pass --overwrite")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        dataset.save_to_disk(str(tmp / "data"))
        for item in (tmp / "data").iterdir():
            item.rename(tmp / item.name)
        (tmp / "data").rmdir()
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_tokenized(folder: Path) -> tuple[Any, dict[str, Any]]:
    """A tokenized dataset folder written by `save_dataset` and its metadata."""
    import datasets

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such dataset folder; create it with a_dataset.py")
    meta_path = folder / META_FILE
    if not meta_path.exists():
        raise UserError(f"{folder}: not a dataset written by a_dataset.py (no {META_FILE})")
    try:
        dataset = datasets.load_from_disk(str(folder))
    except Exception as exc:  # corrupt arrow files and the like
        raise UserError(f"{folder}: cannot read the dataset ({type(exc).__name__})") from exc
    return dataset.with_format("python"), json.loads(meta_path.read_text())


def document_lengths(dataset: Any) -> list[int]:
    """Real tokens per document (the `length` column, else the attention masks' sums)."""
    if "length" in dataset.column_names:
        return list(dataset["length"])
    return [sum(mask) for mask in dataset["attention_mask"]]


def check_vocabulary(meta: dict[str, Any], tokenizer_vocab: int, model_vocab: int, model_name: str) -> None:
    """Refuse a dataset tokenized for another tokenizer than the model's."""
    if meta.get("vocab_size") != tokenizer_vocab or meta.get("max_token_id", 0) >= model_vocab:
        raise UserError(
            f"the dataset was tokenized with {meta.get('tokenizer')} (vocabulary {meta.get('vocab_size')}), "
            f"but {model_name} has a vocabulary of {tokenizer_vocab}; tokenize it again with "
            f"a_dataset.py --tokenizer {model_name}"
        )
