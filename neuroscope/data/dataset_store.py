"""The tokenized dataset on disk: a Hugging Face `datasets` folder with `input_ids`, `attention_mask` and `length`
(real tokens) columns plus `neuroscope_meta.json` (tokenizer and its fingerprint, vocabulary size, counts, source),
written atomically (a half-written dataset is never left under the final name) and replaced only when it is one of
ours; reading it back checks its tokens against their fingerprint, and `check_vocabulary` its tokenizer against a
model's.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from gated_core.artifacts import replace_folder, staging_folder
from gated_core.errors import UserError, first_line
from gated_core.fingerprint import dataset_fingerprint, short, tokenizer_fingerprint

META_FILE = "neuroscope_meta.json"  # beside the arrow files; with "kind": DATASET_KIND, the marker of our datasets
DATASET_KIND = "tokenized_dataset"
# what `save_dataset` writes into a dataset folder: the arrow shards and state of `save_to_disk`, and META_FILE
DATASET_FILES = re.compile(r"data-\d{5}-of-\d{5}\.arrow|dataset_info\.json|state\.json|" + re.escape(META_FILE))


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
