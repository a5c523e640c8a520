"""Text sources, tokenisation and the tokenized dataset on disk (SPEC 6, `a_dataset.py`).

A tokenized dataset is a Hugging Face `datasets` folder with `input_ids`,
`attention_mask` and `length` (real tokens) columns plus `neuroscope_meta.json` (tokenizer, vocabulary size, counts,
source), written atomically: a half-written dataset is never left under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wcos_casestudies.errors import UserError, first_line
from wcos_casestudies.fingerprint import dataset_fingerprint

SHUFFLE_SEED = 2512800
POOL_PER_MTOKEN = 4000  # documents in the pool per million tokens asked for
EMBEDDED_DATASET = "pydoc"
META_FILE = "neuroscope_meta.json"  # beside the arrow files; with "kind": DATASET_KIND, the marker of our datasets
DATASET_KIND = "tokenized_dataset"
TEMPORARY_SUFFIX = ".partial"  # a dataset folder being written
REPLACED_SUFFIX = ".replaced"  # the old dataset folder while --overwrite swaps in the new one


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
        return load_local_texts(path, text_field)
    else:
        try:
            loaded = datasets.load_dataset(dataset, split=split)
        except Exception as exc:  # offline, unknown name, gated: datasets raises many types
            raise UserError(f"dataset {dataset!r} is neither a local file or folder nor loadable from the hub "
                            f"({type(exc).__name__}); use a local .txt/.jsonl/.parquet, or `{EMBEDDED_DATASET}`") from exc
    if text_field not in loaded.column_names:
        raise UserError(f"{dataset}: no {text_field!r} column (columns: {', '.join(loaded.column_names)}); use --text_field")
    return loaded


LOCAL_KINDS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def local_files(path: Path) -> tuple[str, list[Path]]:
    """The kind ("text", "json" or "parquet") and the files of a local dataset file or folder (one kind only)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    by_kind: dict[str, list[Path]] = {}
    for file in files:
        if file.suffix in LOCAL_KINDS:
            by_kind.setdefault(LOCAL_KINDS[file.suffix], []).append(file)
    if len(by_kind) != 1:
        raise UserError(f"{path}: expected .txt, .jsonl/.json or .parquet files (one kind), found {sorted(by_kind) or 'none'}")
    return next(iter(by_kind.items()))


def read_text_file(path: Path) -> str:
    """One document: a UTF-8 text file (binary data and other encodings are refused, not guessed at)."""
    data = path.read_bytes()
    if b"\0" in data:
        raise UserError(f"{path}: binary data (it holds NUL bytes), not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                        "convert it to UTF-8 first") from exc


def read_table_files(kind: str, files: list[Path], path: Path, text_field: str) -> Any:
    """The text column of local .jsonl/.json or .parquet files, which must hold strings."""
    import datasets
    import pyarrow as pa

    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its own log lines would repeat the error below
    try:
        loaded = datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train")
    except (datasets.exceptions.DatasetsError, pa.ArrowException, ValueError, OSError) as exc:  # garbage, wrong encoding
        cause = exc.__cause__ or exc.__context__ or exc
        raise UserError(f"{path}: cannot read these {kind} files ({first_line(cause)}); they must be UTF-8 "
                        f"{'JSON lines' if kind == 'json' else 'Parquet'} with a {text_field!r} field") from exc
    finally:
        datasets.logging.set_verbosity(level)
    if text_field not in loaded.column_names:
        raise UserError(f"{path}: no {text_field!r} column (columns: {', '.join(loaded.column_names)}); use --text_field")
    feature = loaded.features[text_field]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise UserError(f"{path}: the {text_field!r} field holds {feature}, not text")
    return loaded.select_columns([text_field])


def nonempty_rows(texts: Any, text_field: str, path: Path) -> list[int]:
    """Indices of the rows whose text holds something besides white space (computed in Arrow, without
    turning the column into Python strings); text that is not valid UTF-8 is refused."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    column = texts.with_format("arrow")[text_field]
    try:
        filled = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0)
    except pa.ArrowInvalid as exc:
        raise UserError(f"{path}: the {text_field!r} column is not valid UTF-8 ({first_line(exc)}); convert it to UTF-8 first") from exc
    return np.flatnonzero(pc.fill_null(filled, False).to_numpy(zero_copy_only=False)).tolist()


def load_local_texts(path: Path, text_field: str) -> Any:
    """Documents from local .txt files (one per file), .jsonl/.json or .parquet files; empty documents
    (no text, or only white space) are left out with a note, and none left is an error."""
    import datasets

    kind, files = local_files(path)
    if kind == "text":
        texts = datasets.Dataset.from_dict({text_field: [read_text_file(f) for f in files]})
    else:
        texts = read_table_files(kind, files, path, text_field)
    keep = nonempty_rows(texts, text_field, path)
    if not keep:
        raise UserError(f"{path}: no text in it (every document is empty)")
    if len(keep) < len(texts):
        print(f"note: {path}: left out {len(texts) - len(keep)} empty document(s) of {len(texts)}", file=sys.stderr)
        texts = texts.select(keep)
    return texts


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


def check_replaceable(folder: Path) -> None:
    """Refuse to replace `folder` unless it is a tokenized dataset that `save_dataset` wrote (its marker, the
    metadata file of kind `tokenized_dataset`): --overwrite never deletes anything else."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        raise UserError(f"{folder} exists and is {'a symbolic link' if folder.is_symlink() else 'not a folder'}; "
                        "--overwrite replaces only datasets written by a_dataset.py: choose another --save_to")
    try:
        meta = _read_meta(folder / META_FILE) if (folder / META_FILE).is_file() else None
    except UserError:  # unreadable metadata: not provably ours
        meta = None
    if not isinstance(meta, dict) or meta.get("kind", DATASET_KIND) != DATASET_KIND or "documents" not in meta:
        raise UserError(f"{folder} is not a dataset written by a_dataset.py (no {META_FILE} of a dataset in it); "
                        "--overwrite replaces only those: choose another --save_to, or move it away yourself")


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Put the finished `tmp` in place of `folder`: the old one is renamed aside first and removed last."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=REPLACED_SUFFIX))
        os.replace(folder, old)
    try:
        os.replace(tmp, folder)
    except OSError:
        if old is not None:
            os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old)


def remove_stale_folders(folder: Path) -> None:
    """Remove what an interrupted `save_dataset` of `folder` left beside it (call only while holding its lock)."""
    for suffix in (TEMPORARY_SUFFIX, REPLACED_SUFFIX):
        for item in Path(folder).parent.glob(f".{Path(folder).name}.*{suffix}"):
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)


def save_dataset(dataset: Any, meta: dict[str, Any], folder: Path, overwrite: bool = False) -> Path:
    """`save_to_disk` into a temporary folder, add the metadata (with the kind marker and the tokens'
    fingerprint), then rename into place; an existing folder is replaced only if it is a dataset of ours."""
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        if not overwrite:
            raise UserError(f"{folder} exists; choose another --save_to or pass --overwrite")
        check_replaceable(folder)
    meta = {**meta, "kind": DATASET_KIND, "fingerprint": dataset_fingerprint(dataset)}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=TEMPORARY_SUFFIX))
    try:
        dataset.save_to_disk(str(tmp / "data"))
        for item in (tmp / "data").iterdir():
            item.rename(tmp / item.name)
        (tmp / "data").rmdir()
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        _replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _read_meta(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read the dataset's metadata ({first_line(exc)}); make the dataset again "
                        "with a_dataset.py") from exc


def load_tokenized(folder: Path) -> tuple[Any, dict[str, Any]]:
    """A tokenized dataset folder written by `save_dataset` and its metadata, with `fingerprint` computed from
    the tokens (refused when it differs from the one recorded: the files changed after they were written)."""
    import datasets

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such dataset folder; create it with a_dataset.py")
    meta_path = folder / META_FILE
    if not meta_path.exists():
        raise UserError(f"{folder}: not a dataset written by a_dataset.py (no {META_FILE})")
    meta = _read_meta(meta_path)
    if not isinstance(meta, dict) or meta.get("kind", DATASET_KIND) != DATASET_KIND or \
            not all(isinstance(meta.get(key), int) for key in ("documents", "tokens")):
        raise UserError(f"{meta_path}: not the metadata of a dataset written by a_dataset.py; make the dataset again")
    try:
        dataset = datasets.load_from_disk(str(folder))
    except Exception as exc:  # corrupt arrow files and the like: datasets and pyarrow raise many types
        raise UserError(f"{folder}: cannot read the dataset ({first_line(exc)})") from exc
    missing = [c for c in ("input_ids", "attention_mask") if c not in getattr(dataset, "column_names", ())]
    if missing:
        raise UserError(f"{folder}: not a tokenized dataset (no {', '.join(missing)} column)")
    fingerprint = dataset_fingerprint(dataset)
    if meta.get("fingerprint", fingerprint) != fingerprint:
        raise UserError(f"{folder}: its token files do not match its metadata (changed after a_dataset.py wrote them); "
                        "make it again with a_dataset.py --overwrite")
    return dataset.with_format("python"), {**meta, "fingerprint": fingerprint}


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
