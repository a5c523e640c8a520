"""Text sources of the neuroscope's dataset (`a_dataset.py`): the text embedded in Python, local .txt, .jsonl/.json
and .parquet files (refused, with one clear line, when they are not regular UTF-8 files), the hub, and streams of
it. Each gives a `datasets` dataset with one text column; empty documents and empty files are left out with a note.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from gated_core.cli import check_regular_file
from gated_core.errors import UserError, first_line
from neuroscope.constants import EMBEDDED_DATASET


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
    """The kind ("text", "json" or "parquet") and the files of a local dataset file or folder (one kind only); every
    file of a known kind must be a regular file (nothing of those kinds is left out silently)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_KINDS and not p.is_dir())
    else:
        files = [path]
    by_kind: dict[str, list[Path]] = {}
    for file in files:
        check_regular_file(file, "--dataset", "regular files (or folders of them)")
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
    except (datasets.exceptions.DatasetsError, pa.ArrowException, ValueError, OSError,
            StopIteration) as exc:  # garbage, wrong encoding; StopIteration: no rows to infer the columns from
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


def holds_nothing(path: Path, chunk_bytes: int = 1 << 16) -> bool:
    """Whether a file holds nothing but white space (read only up to its first other byte)."""
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_bytes), b""):
            if chunk.strip():
                return False
    return True


def without_empty_files(files: list[Path], path: Path) -> list[Path]:
    """The .jsonl/.json/.parquet files that hold something: the others hold no documents (and the readers would
    fail on them); they are left out with a note, and none left is an error."""
    kept = [file for file in files if not holds_nothing(file)]
    if not kept:
        raise UserError(f"{path}: no text in it (every file is empty)")
    if len(kept) < len(files):
        print(f"note: {path}: left out {len(files) - len(kept)} empty file(s) of {len(files)}", file=sys.stderr)
    return kept


def load_local_texts(path: Path, text_field: str) -> Any:
    """Documents from local .txt files (one per file), .jsonl/.json or .parquet files; empty documents
    (no text, or only white space) and empty table files are left out with a note, and none left is an error."""
    import datasets

    kind, files = local_files(path)
    if kind == "text":
        texts = datasets.Dataset.from_dict({text_field: [read_text_file(f) for f in files]})
    else:
        texts = read_table_files(kind, without_empty_files(files, path), path, text_field)
    keep = nonempty_rows(texts, text_field, path)
    if not keep:
        raise UserError(f"{path}: no text in it (every document is empty)")
    if len(keep) < len(texts):
        print(f"note: {path}: left out {len(texts) - len(keep)} empty document(s) of {len(texts)}", file=sys.stderr)
        texts = texts.select(keep)
    return texts


def stream_texts(dataset: str, text_field: str = "text", split: str = "train", local_shards: int = 16) -> Any:
    """A `datasets.IterableDataset` of the text (a_dataset.py --streaming): a hub dataset is streamed, so that only
    the documents used (and one shuffle buffer) are downloaded; local files and the embedded text are loaded as
    `load_texts` does and handed out in `local_shards` shards."""
    import datasets

    if dataset == EMBEDDED_DATASET or Path(dataset).expanduser().exists():
        texts = load_texts(dataset, text_field, split)
        return texts.to_iterable_dataset(num_shards=max(1, min(local_shards, len(texts))))
    try:
        stream = datasets.load_dataset(dataset, split=split, streaming=True)
    except Exception as exc:  # offline, unknown name, gated: datasets raises many types
        raise UserError(f"dataset {dataset!r} is neither a local file or folder nor streamable from the hub "
                        f"({type(exc).__name__}); use a local .txt/.jsonl/.parquet, or `{EMBEDDED_DATASET}`") from exc
    if stream.column_names is not None and text_field not in stream.column_names:
        raise UserError(f"{dataset}: no {text_field!r} column (columns: {', '.join(stream.column_names)}); use --text_field")
    return stream
