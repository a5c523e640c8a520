"""Tokenisation and the selection of documents (`a_dataset.py`): every document starts with the tokenizer's BOS
(or EOS), is truncated (tokenized only as far as it is kept) or split, and documents are kept in the seed's order
(shuffle, pool of 4000 x Mtokens documents) or a stream's buffered shuffle until the token goal, exact duplicates
dropped on request. `build_dataset` gives the tokenized `datasets.Dataset` (`input_ids`, `attention_mask`, `length`)
and its metadata; `dataset_store.py` writes it to disk.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gated_core.artifacts import made_from
from gated_core.errors import UserError
from gated_core.fingerprint import tokenizer_fingerprint
from neuroscope.constants import MIN_DOCUMENTS_PER_PROCESS, POOL_PER_MTOKEN, SHUFFLE_SEED, STREAM_BUFFER

TOKENIZE_BATCH = 256  # documents per tokenizer call
MIN_BLOCK_DOCUMENTS = 256  # documents tokenized at least per block
MAX_BLOCK_DOCUMENTS = 100_000  # documents tokenized at most per block


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
            **made_from(tokenizer=tokenizer_fingerprint(tokenizer)),
            "max_token_id": max_token_id, "documents_read": selection.documents,
            "duplicates_dropped": selection.duplicates if drop_duplicates else None,
            "selection": f"streaming (buffered shuffle of {buffer_size} documents)" if streaming
            else f"seed (shuffle, pool of {POOL_PER_MTOKEN} x Mtokens documents)"}
    if not streaming:  # a goal not reached: the pool ran out if it holds fewer documents than the dataset
        meta.update({"source_documents": len(texts), "pool_documents": pool_size(len(texts), mtokens)})
    return dataset, meta
