"""Fingerprints: what a result was computed from, so that a cached result is reused only for the same inputs.

- `weights_fingerprint`: of a checkpoint folder or GGUF file, from every weight file's name, size,
  modification time and a few sampled blocks of its bytes, plus the config files' bytes. Cheap
  (about a megabyte read for a 7B model), and it changes when the files are rewritten or copied
  without their times, which then counts as other weights (refused or recomputed, never reused).
  Its limitation: an edit outside the three sampled 64 KiB blocks of a file whose modification time
  was put back (reproducible builds, `rsync -a`, Nix) goes unnoticed.
  With `full=True` (the `--full_hash` flag of every script that takes `--model`) it is a hash of every
  byte of the weight files (and the config files; no modification time), written `full:<hex>`: slow
  (the whole checkpoint is read) but it misses no edit, and a copy without its files' times is the
  same weights. The two kinds are never compared with each other: a result recorded with one kind
  and checked with the other is refused in one line that says which way to pass `--full_hash`
  (`kind_mismatch`), never taken for a match, nor for other weights.
- `tokenizer_fingerprint`: of a loaded tokenizer's vocabulary, every token string by id and the
  special tokens (so the tokenizer inside a GGUF file and the tokenizer files of a folder alike; an
  edit of the normalizer or the decoder alone, which leaves the vocabulary as it was, is not noticed).
  A dataset records it (`neuroscope_meta.json`), the activation statistics too, and a run that uses
  them with another tokenizer, even one of the same size, is refused before the model loads (the
  pass, the ablation, the pages and the viewer). A dataset or statistics of an older version record
  none: they are still used, checked by the vocabulary's size alone, with a one-line note.
- `dataset_fingerprint`: of a tokenized dataset, from its token ids, attention masks and lengths.
- `content_digest`: of an artifact's plain data (tensors, numbers, strings, containers), the
  checksum that `artifacts.save_artifact` stores and `load_artifact` verifies.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
CONFIG_FILES = ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")
SAMPLE_BYTES = 1 << 16  # bytes read at the start, middle and end of each weight file
FINGERPRINT_CHARS = 16  # hex digits kept of a fingerprint (64 bits)
FULL_HASH_PREFIX = "full:"  # marks a weights fingerprint of every byte (`weights_fingerprint(..., full=True)`)
HASH_CHUNK_BYTES = 1 << 24  # bytes read at a time by the full hash
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
DATASET_COLUMNS = ("input_ids", "attention_mask", "length")
ROWS_PER_CHUNK = 8192  # rows of a dataset hashed at a time


def short(fingerprint: str | None) -> str:
    """A fingerprint as shown in messages (a full hash keeps its `full:` mark)."""
    if fingerprint is None:
        return "none recorded"
    prefix = FULL_HASH_PREFIX if is_full_hash(fingerprint) else ""
    return prefix + str(fingerprint).removeprefix(prefix)[:8]


def is_full_hash(fingerprint: str | None) -> bool:
    """Whether a weights fingerprint is a hash of every byte (`--full_hash`) rather than the sampled one."""
    return str(fingerprint).startswith(FULL_HASH_PREFIX)


def kind_mismatch(stored: str | None, current: str) -> str | None:
    """Why a recorded weights fingerprint cannot be compared with the `current` one: it is of the other kind (a
    phrase that says which way to pass --full_hash); None when both are of one kind, or none is recorded."""
    if stored is None or is_full_hash(stored) == is_full_hash(current):
        return None
    if is_full_hash(stored):
        return ("its weights fingerprint is a hash of every byte, made with --full_hash, and this run's is the sampled one: "
                "pass --full_hash to check it")
    return ("its weights fingerprint is the sampled one, made without --full_hash, which cannot vouch for every byte as "
            "--full_hash asks: leave out --full_hash to check it that way")


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in CONFIG_FILES))


def _sampled_bytes(file: Path, size: int) -> bytes:
    """Three blocks of the file: its start, middle and end."""
    with file.open("rb") as handle:
        blocks = []
        for offset in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}):
            handle.seek(offset)
            blocks.append(handle.read(SAMPLE_BYTES))
    return b"".join(blocks)


def _update_with_file(digest: Any, file: Path) -> None:
    """Feed every byte of a file to `digest`, a chunk at a time."""
    with file.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)


def weights_fingerprint(path: Path, full: bool = False) -> str:
    """Fingerprint of a checkpoint folder or a GGUF file: sampled, or with `full` a hash of every byte (see the
    module's docstring)."""
    digest = hashlib.sha256(b"every byte\0" if full else b"")
    for file in _weight_files(Path(path)):
        stat = file.stat()  # follows the Hugging Face cache's symbolic links to the blobs
        digest.update(f"{file.name}\0{stat.st_size}\0".encode())
        if file.name in CONFIG_FILES:
            digest.update(file.read_bytes())
        elif full:
            _update_with_file(digest, file)
        else:
            digest.update(f"{stat.st_mtime_ns}\0".encode())
            digest.update(_sampled_bytes(file, stat.st_size))
    return (FULL_HASH_PREFIX if full else "") + digest.hexdigest()[:FINGERPRINT_CHARS]


def _update_with_text(digest: Any, text: Any) -> None:
    """Feed one token string (or None: an id without a token) to `digest`, its length first."""
    data = b"\xff" if text is None else str(text).encode("utf-8", "surrogatepass")
    digest.update(f"{len(data)}:".encode())
    digest.update(data)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Fingerprint of a loaded tokenizer's vocabulary: every token string by id (added tokens included) and the
    special tokens with their ids. Two tokenizers of the same size with another token at one id differ."""
    digest = hashlib.sha256(f"{len(tokenizer)} tokens\0".encode())
    for token in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))):
        _update_with_text(digest, token)
    for name in SPECIAL_TOKENS:
        _update_with_text(digest, name)
        _update_with_text(digest, getattr(tokenizer, name, None))
        _update_with_text(digest, getattr(tokenizer, f"{name}_id", None))
    for token in sorted(map(str, tokenizer.all_special_tokens)):
        _update_with_text(digest, token)
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def _column_arrays(column: Any) -> list[tuple[str, np.ndarray]]:
    """A pyarrow column chunk as canonical int64 arrays: its values, and for a list column the list lengths."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        return [("values", column.flatten().to_numpy(zero_copy_only=False)), ("lengths", lengths)]
    return [("values", column.to_numpy(zero_copy_only=False))]


def dataset_fingerprint(dataset: Any) -> str:
    """Fingerprint of a tokenized `datasets.Dataset`: its token ids, masks and lengths (the same however it is chunked)."""
    columns = [name for name in DATASET_COLUMNS if name in dataset.column_names]
    hashers: dict[tuple[str, str], Any] = {}
    for table in dataset.with_format("arrow").iter(batch_size=ROWS_PER_CHUNK):
        for name in columns:
            for chunk in table.column(name).chunks:
                for part, values in _column_arrays(chunk):
                    hasher = hashers.setdefault((name, part), hashlib.sha256())
                    hasher.update(np.ascontiguousarray(values, dtype="<i8").tobytes())
    digest = hashlib.sha256(f"{len(dataset)} rows\0".encode())
    for (name, part), hasher in hashers.items():
        digest.update(f"{name}.{part}\0{hasher.hexdigest()}\0".encode())
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def _update(digest: Any, obj: Any) -> None:
    """Feed one value of an artifact to `digest`, the same way whichever format (.pt, .pickle) it went through."""
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous()
        digest.update(f"tensor {str(tensor.dtype).removeprefix('torch.')} {tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        digest.update(f"dict {len(obj)}\0".encode())
        for key in sorted(obj, key=repr):
            _update(digest, key)
            _update(digest, obj[key])
    elif isinstance(obj, (list, tuple)):
        digest.update(f"sequence {len(obj)}\0".encode())
        for item in obj:
            _update(digest, item)
    elif isinstance(obj, (bool, np.bool_)):
        digest.update(f"bool {bool(obj)}\0".encode())
    elif isinstance(obj, (int, np.integer)):
        digest.update(f"int {int(obj)}\0".encode())
    elif isinstance(obj, (float, np.floating)):
        digest.update(f"float {float(obj)!r}\0".encode())
    elif isinstance(obj, str):
        digest.update(f"str {len(obj)}\0{obj}\0".encode("utf-8", "surrogatepass"))
    else:
        digest.update(f"{type(obj).__name__} {obj!r}\0".encode())


def content_digest(data: Any) -> str:
    """SHA-256 of an artifact's plain data (tensors by dtype, shape and bytes; containers in a fixed order)."""
    digest = hashlib.sha256()
    _update(digest, data)
    return digest.hexdigest()
