"""Text sources, tokenisation and the tokenized dataset on disk (the neuroscope's first step, `a_dataset.py`).

A tokenized dataset is a Hugging Face `datasets` folder with `input_ids`,
`attention_mask` and `length` (real tokens) columns plus `neuroscope_meta.json` (tokenizer and its fingerprint,
vocabulary size, counts, source), written atomically: a half-written dataset is never left under the final name.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import stat
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gated_core.artifacts import replace_folder, staging_folder
from gated_core.errors import UserError, first_line
from gated_core.fingerprint import dataset_fingerprint, short, tokenizer_fingerprint
from neuroscope.constants import EMBEDDED_DATASET, MIN_DOCUMENTS_PER_PROCESS, POOL_PER_MTOKEN, SHUFFLE_SEED, STREAM_BUFFER

TOKENIZE_BATCH = 256  # documents per tokenizer call
MIN_BLOCK_DOCUMENTS = 256  # documents tokenized at least per block
MAX_BLOCK_DOCUMENTS = 100_000  # documents tokenized at most per block
META_FILE = "neuroscope_meta.json"  # beside the arrow files; with "kind": DATASET_KIND, the marker of our datasets
DATASET_KIND = "tokenized_dataset"
# what `save_dataset` writes into a dataset folder: the arrow shards and state of `save_to_disk`, and META_FILE
DATASET_FILES = re.compile(r"data-\d{5}-of-\d{5}\.arrow|dataset_info\.json|state\.json|" + re.escape(META_FILE))


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


def check_regular_file(path: Path) -> None:
    """Refuse, before anything opens it, an input that is not a regular file: reading a FIFO waits for a writer for
    ever, a device may never end, and a broken link or a socket cannot be read."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror}{', a broken link' if path.is_symlink() else ''})") from exc
    if not stat.S_ISREG(mode):
        kind = ("a FIFO, " if stat.S_ISFIFO(mode) else "a socket, " if stat.S_ISSOCK(mode)
                else "a device, " if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "")
        raise UserError(f"{path}: {kind}not a regular file; --dataset reads regular files (or folders of them) only")


def local_files(path: Path) -> tuple[str, list[Path]]:
    """The kind ("text", "json" or "parquet") and the files of a local dataset file or folder (one kind only); every
    file of a known kind must be a regular file (nothing of those kinds is left out silently)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_KINDS and not p.is_dir())
    else:
        files = [path]
    by_kind: dict[str, list[Path]] = {}
    for file in files:
        check_regular_file(file)
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


def document_start(tokenizer: Any, add_bos: bool) -> dict[str, Any]:
    """What goes first in every document: the tokenizer's BOS; for a tokenizer without one (OLMo's), its EOS, as
    the seed did (the authors' Dolma subset starts every document with <|endoftext|>); nothing without `add_bos`."""
    if not add_bos:
        return {"add_bos_token": False, "bos_token_id": None, "bos_token": None, "bos_is_eos": False}
    for attribute, is_eos in (("bos", False), ("eos", True)):
        token_id = getattr(tokenizer, f"{attribute}_token_id")
        if token_id is not None:
            return {"add_bos_token": True, "bos_token_id": int(token_id), "bos_token": str(getattr(tokenizer, f"{attribute}_token")),
                    "bos_is_eos": is_eos}
    raise UserError("the tokenizer has neither a BOS nor an EOS token to put first; use --no_bos_token")


def document_digest(text: str) -> bytes:
    """16 bytes that tell exact duplicate documents apart."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


PREFIX_CHARS_PER_TOKEN = 6  # characters of a long text tokenized at first for each token wanted (doubled as needed)
WHOLE_TEXT_CUTS = 6  # a text up to this many first cuts long is tokenized whole: its cuts would cost about as much


def prefix_margin(room: int) -> int:
    """Tokens that a prefix must yield past the `room` kept: the last tokens of a prefix may change with what follows
    the cut (a word or a run of multi-byte characters cut in two, white space before the next word)."""
    return 64 + room // 8


def leading_token_ids(tokenizer: Any, texts: list[str], room: int) -> list[list[int]]:
    """The first `room` token ids of every text, the same as those of the whole text, from a prefix of it: memory
    and time follow `room`, not the text's length (a 20 MB document took gigabytes tokenized whole).

    A long text is cut after a number of characters (Python characters: never inside a character's bytes) that is
    doubled until its tokens reach `room` + `prefix_margin` and two cuts agree on the first `room` tokens; a cut
    changes only the tokens next to it, so they are those of the whole text. A text of up to WHOLE_TEXT_CUTS first
    cuts, or one that the doubling reaches the end of, is tokenized whole."""
    wanted = room + prefix_margin(room)
    first = wanted * PREFIX_CHARS_PER_TOKEN
    cuts = [len(text) if len(text) <= WHOLE_TEXT_CUTS * first else first for text in texts]
    found: list[list[int]] = [[] for _ in texts]
    shorter: dict[int, list[int]] = {}  # text -> the first `room` ids of a shorter cut that reached `wanted`
    pending = list(range(len(texts)))
    while pending:
        encoded = tokenizer([texts[i][:cuts[i]] for i in pending], add_special_tokens=False)["input_ids"]
        waiting = []
        for i, ids in zip(pending, encoded):
            if cuts[i] == len(texts[i]) or (len(ids) >= wanted and shorter.get(i) == ids[:room]):
                found[i] = ids[:room]
                continue
            if len(ids) >= wanted:
                shorter[i] = ids[:room]
            cuts[i] = min(len(texts[i]), 2 * cuts[i])
            waiting.append(i)
        pending = waiting
    return found


def _tokenize_batch(batch: dict[str, list], tokenizer: Any, text_field: str, max_length: int, bos: int | None,
                    overflow: bool) -> dict[str, list]:
    """`datasets.map` body: the rows of a batch of documents (BOS first, truncated or split), each with its
    document's digest (of the whole text) and whether it is the document's first row. Truncated documents are
    tokenized only as far as they are kept; split ones (`overflow`) whole."""
    room = max_length - (bos is not None)
    texts = [text or "" for text in batch[text_field]]
    rows: dict[str, list] = {"input_ids": [], "length": [], "max_id": [], "digest": [], "first": []}
    all_ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if overflow else leading_token_ids(tokenizer, texts, room)
    for text, ids in zip(texts, all_ids):
        pieces = [ids[i:i + room] for i in range(0, len(ids), room)] if overflow else [ids]
        digest = document_digest(text)
        for index, piece in enumerate(pieces):
            row = ([bos] if bos is not None else []) + piece
            if row:
                for key, value in (("input_ids", row), ("length", len(row)), ("max_id", max(row)), ("digest", digest),
                                   ("first", index == 0)):
                    rows[key].append(value)
    return rows


def tokenize_block(texts: Any, tokenizer: Any, text_field: str, max_length: int, bos: int | None, overflow: bool,
                   num_proc: int = 1) -> Any:
    """Tokenize a `datasets.Dataset` of documents with `map(batched=True)`, in up to `num_proc` processes."""
    import datasets

    procs = max(1, min(num_proc, len(texts) // MIN_DOCUMENTS_PER_PROCESS))
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32")), "length": datasets.Value("int32"),
                                  "max_id": datasets.Value("int32"), "digest": datasets.Value("binary"), "first": datasets.Value("bool")})
    if procs > 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the processes are the parallelism
    return texts.map(_tokenize_batch, batched=True, batch_size=TOKENIZE_BATCH, num_proc=procs if procs > 1 else None,
                     remove_columns=texts.column_names, features=features, keep_in_memory=True, load_from_cache_file=False,
                     new_fingerprint=uuid.uuid4().hex,  # skips hashing the tokenizer
                     fn_kwargs={"tokenizer": tokenizer, "text_field": text_field, "max_length": max_length, "bos": bos,
                                "overflow": overflow})


@dataclass
class Selection:
    """The rows kept so far: documents in order, exact duplicates dropped, until the token goal."""

    goal: int | None
    drop_duplicates: bool
    blocks: list[Any] = field(default_factory=list)
    tokens: int = 0
    documents: int = 0  # documents read (kept or not)
    duplicates: int = 0
    seen: set[bytes] = field(default_factory=set)

    @property
    def done(self) -> bool:
        return self.goal is not None and self.tokens >= self.goal

    def add(self, block: Any) -> None:
        """Keep the rows of a tokenized block, in order, up to the goal."""
        kept, keep_document = [], True
        for index, (length, digest, first) in enumerate(zip(block["length"], block["digest"], block["first"])):
            if self.done:
                break
            if first:
                self.documents += 1
                keep_document = not (self.drop_duplicates and digest in self.seen)
                self.duplicates += not keep_document
                self.seen.add(digest)
            if keep_document:
                kept.append(index)
                self.tokens += length
        self.blocks.append(block.select(kept))

    def next_block_size(self, max_length: int) -> int:
        """Documents to tokenize next: half the goal at max_length / 2 tokens each at first, then enough to reach
        the goal at the average so far (5% more), within bounds; tokens past the goal are tokenized for nothing."""
        if self.goal is None:
            return MAX_BLOCK_DOCUMENTS
        if not self.documents:
            wanted = int(self.goal / (max_length / 2) / 2)
        else:
            wanted = int((self.goal - self.tokens) / max(self.tokens / self.documents, 1.0) * 1.05)
        return min(MAX_BLOCK_DOCUMENTS, wanted + MIN_BLOCK_DOCUMENTS)


def select_rows(next_texts: Callable[[int], Any], tokenizer: Any, selection: Selection, text_field: str,
                max_length: int, bos: int | None, overflow: bool, num_proc: int) -> Selection:
    """Tokenize blocks of documents from `next_texts(n)` (a `datasets.Dataset`, None at the end) into `selection`."""
    from tqdm import tqdm

    with tqdm(total=selection.goal, unit="tok", unit_scale=True, desc="tokenizing", leave=False) as progress:
        while not selection.done:
            texts = next_texts(selection.next_block_size(max_length))
            if texts is None or len(texts) == 0:
                break
            before = selection.tokens
            selection.add(tokenize_block(texts, tokenizer, text_field, max_length, bos, overflow, num_proc))
            progress.update(selection.tokens - before)
    return selection


def pool_size(documents: int, mtokens: float | None) -> int:
    """Documents in the seed's shuffle pool out of a dataset of `documents`: 4000 x Mtokens (at least one; all of
    them with None)."""
    return documents if mtokens is None else min(documents, max(1, int(POOL_PER_MTOKEN * mtokens)))


def pool_blocks(texts: Any, mtokens: float | None) -> Callable[[int], Any]:
    """The seed's selection: shuffle (seed 2512800), take the pool of 4000 x Mtokens documents, read it in order."""
    shuffled = texts.shuffle(seed=SHUFFLE_SEED)
    shuffled = shuffled.select(range(pool_size(len(shuffled), mtokens)))
    position = 0

    def next_texts(size: int) -> Any:
        nonlocal position
        if position >= len(shuffled):
            return None
        block = shuffled.select(range(position, min(position + size, len(shuffled))))
        position += size
        return block

    return next_texts


def stream_blocks(stream: Any, text_field: str, buffer_size: int) -> Callable[[int], Any]:
    """A buffered shuffle of a stream (seed 2512800, `buffer_size` documents): reads only the documents it hands out
    plus one buffer."""
    import datasets

    rows = iter(stream.shuffle(seed=SHUFFLE_SEED, buffer_size=buffer_size))

    def next_texts(size: int) -> Any:
        block = list(itertools.islice(rows, size))
        if block and text_field not in block[0]:  # a stream whose columns were not known in advance
            raise UserError(f"the stream has no {text_field!r} column (columns: {', '.join(block[0])}); use --text_field")
        return datasets.Dataset.from_dict({text_field: [row[text_field] for row in block]}) if block else None

    return next_texts


def finish_rows(batch: dict[str, list], max_length: int, pad: int | None) -> dict[str, list]:
    """`datasets.map` body: attention masks, and padding to `max_length` when `pad` is given."""
    masks = [[1] * len(ids) for ids in batch["input_ids"]]
    if pad is not None:
        batch["input_ids"] = [ids + [pad] * (max_length - len(ids)) for ids in batch["input_ids"]]
        masks = [mask + [0] * (max_length - len(mask)) for mask in masks]
    return {"input_ids": batch["input_ids"], "attention_mask": masks, "length": batch["length"]}


def build_dataset(texts: Any, tokenizer: Any, mtokens: float | None, max_length: int = 1024, add_bos: bool = True,
                  overflow: bool = False, padding: bool = False, text_field: str = "text", num_proc: int = 1,
                  drop_duplicates: bool = False, buffer_size: int = STREAM_BUFFER) -> tuple[Any, dict[str, Any]]:
    """Tokenize `texts` and keep documents in order until `mtokens` million tokens (all of them with None).

    A `datasets.Dataset` gets the seed's selection (`pool_blocks`); a `datasets.IterableDataset` (a_dataset.py
    --streaming) a buffered shuffle that reads only what it needs (`stream_blocks`): another selection.
    """
    import datasets

    datasets.disable_progress_bars()  # the tokens have their own progress bar
    start = document_start(tokenizer, add_bos)
    streaming = isinstance(texts, datasets.IterableDataset)
    next_texts = stream_blocks(texts, text_field, buffer_size) if streaming else pool_blocks(texts, mtokens)
    goal = None if mtokens is None else int(round(mtokens * 1_000_000))
    selection = select_rows(next_texts, tokenizer, Selection(goal, drop_duplicates), text_field, max_length,
                            start["bos_token_id"], overflow, num_proc)
    rows = datasets.concatenate_datasets(selection.blocks) if selection.blocks else None
    if rows is None or len(rows) == 0:
        raise UserError("no documents with tokens in the dataset")
    max_token_id = max(int(block_max) for block_max in rows["max_id"])
    pad = (tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0) if padding else None
    dataset = rows.map(finish_rows, batched=True, remove_columns=rows.column_names, keep_in_memory=True,
                       features=datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32")),
                                                   "attention_mask": datasets.Sequence(datasets.Value("int8")),
                                                   "length": datasets.Value("int32")}),
                       fn_kwargs={"max_length": max_length, "pad": pad}, new_fingerprint=uuid.uuid4().hex)
    meta = {"documents": len(dataset), "tokens": selection.tokens, "goal_tokens": goal,
            "reached_goal": goal is None or selection.tokens >= goal, "max_length": max_length, **start,
            "padding": padding, "overflow": overflow, "shuffle_seed": SHUFFLE_SEED, "vocab_size": len(tokenizer),
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
            "max_token_id": max_token_id, "documents_read": selection.documents,
            "duplicates_dropped": selection.duplicates if drop_duplicates else None,
            "selection": f"streaming (buffered shuffle of {buffer_size} documents)" if streaming
            else f"seed (shuffle, pool of {POOL_PER_MTOKEN} x Mtokens documents)"}
    if not streaming:  # a goal not reached: the pool ran out if it holds fewer documents than the dataset
        meta.update({"source_documents": len(texts), "pool_documents": pool_size(len(texts), mtokens)})
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
    foreign = sorted(p.name for p in folder.iterdir() if not DATASET_FILES.fullmatch(p.name))
    if foreign:
        raise UserError(f"{folder} holds files that a_dataset.py did not write ({', '.join(foreign[:3])}"
                        f"{', …' if len(foreign) > 3 else ''}); --overwrite would delete them: move them away, or choose "
                        "another --save_to")


def is_dataset_folder(folder: Path) -> bool:
    """Whether `folder` is a tokenized dataset that `save_dataset` wrote (its metadata file is there)."""
    return Path(folder).is_dir() and (Path(folder) / META_FILE).is_file()


def save_dataset(dataset: Any, meta: dict[str, Any], folder: Path, overwrite: bool = False) -> Path:
    """`save_to_disk` into a temporary folder, add the metadata (with the kind marker and the tokens'
    fingerprint), then rename into place; an existing folder is replaced only if it is a dataset of ours."""
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        if not overwrite:
            raise UserError(f"{folder} exists; choose another --save_to or pass --overwrite")
        check_replaceable(folder)
    meta = {**meta, "kind": DATASET_KIND, "fingerprint": dataset_fingerprint(dataset)}
    tmp = staging_folder(folder)
    try:
        dataset.save_to_disk(str(tmp / "data"))
        for item in (tmp / "data").iterdir():
            item.rename(tmp / item.name)
        (tmp / "data").rmdir()
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        replace_folder(tmp, folder)
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


def check_vocabulary(meta: dict[str, Any], tokenizer: Any, model_vocab: int, model_name: str) -> str:
    """Refuse a dataset tokenized with another tokenizer than the model's `tokenizer`: by the tokenizer fingerprint
    that the dataset records (every token string by id and the special tokens), and by the sizes. A dataset of an
    older a_dataset.py records none: it is checked by the sizes alone, with a note. Returns the tokenizer's fingerprint."""
    recorded, current = meta.get("tokenizer_fingerprint"), tokenizer_fingerprint(tokenizer)
    again = f"tokenize it again with a_dataset.py --tokenizer {model_name}"
    if recorded is not None and recorded != current:
        raise UserError(f"the dataset was tokenized with another tokenizer than {model_name}'s, even if of the same size "
                        f"(the dataset's, of {meta.get('tokenizer')}, has the tokenizer fingerprint {short(recorded)}, the "
                        f"model's {short(current)}: other tokens, ids or special tokens, or tokenizer files changed since); {again}")
    if meta.get("vocab_size") != len(tokenizer) or meta.get("max_token_id", 0) >= model_vocab:
        raise UserError(f"the dataset was tokenized with {meta.get('tokenizer')} (vocabulary {meta.get('vocab_size')}), "
                        f"but {model_name} has a vocabulary of {len(tokenizer)}; {again}")
    if recorded is None:
        print(f"note: the dataset records no tokenizer fingerprint (made by an older a_dataset.py): its tokenizer is "
              f"checked by vocabulary size only; {again} --overwrite to record it", file=sys.stderr)
    return current
