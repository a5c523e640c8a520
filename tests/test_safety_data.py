"""Data safety, round 2: building datasets (a_dataset.py, neuroscope/data/tokenization.py).

One test per cause: an empty .jsonl, a FIFO where a text file is expected, the shuffle pool running out told apart
from the dataset running out, long documents tokenized only as far as the truncation needs (the same ids as the whole
text), and one name check for every folder name inside --datadir.
"""

from __future__ import annotations

import os
import random
import threading

import datasets
import pytest
from helpers import call, dataset_args, refused, succeeds, write_corpus

from gated_core.models.loading import load_tokenizer
from gated_core.models.sources import resolve_model
from neuroscope import a_dataset, b_activations, d_recompute_vis, e_ablate
from neuroscope.constants import POOL_PER_MTOKEN
from neuroscope.data.dataset_store import load_tokenized
from neuroscope.data.tokenization import build_dataset


@pytest.fixture(scope="module")
def llama(tiny_models):
    return tiny_models["llama"]


# ----------------------------------------------------------------------------- 1. empty .jsonl


def test_an_empty_jsonl_gives_one_line(llama, tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_bytes(b"\n \n\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.jsonl").write_bytes(b"")
    (tmp_path / "folder" / "b.jsonl").write_bytes(b"\n")
    for source in ("empty.jsonl", "blank.jsonl", "folder"):
        for streaming in ([], ["--streaming"]):
            refused(a_dataset.main, dataset_args(tmp_path / "data", "x", tmp_path / source, llama) + streaming, tmp_path,
                    "no text in it")
    # an empty file beside one with text: left out with a note, the others' documents kept
    write_corpus(tmp_path / "folder" / "c.jsonl", ["one document", "another one"])
    outcome = succeeds(a_dataset.main, dataset_args(tmp_path / "data", "x", tmp_path / "folder", llama))
    assert "left out 2 empty file(s)" in outcome.err
    assert load_tokenized(tmp_path / "data" / "x")[1]["documents"] == 2


# ----------------------------------------------------------------------------- 2. FIFOs


def _unblocked(fifo, seconds: float = 5.0):
    """A thread that opens `fifo` for writing after `seconds` and closes it (so that a reader stuck on it ends with
    nothing read, instead of the test hanging), unless it is told to stop first."""
    stop = threading.Event()

    def unblock():
        if not stop.wait(seconds):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader: nothing to unblock
                pass

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    return stop, thread


def test_a_fifo_is_refused_before_it_is_opened(llama, tmp_path):
    os.mkfifo(tmp_path / "x.txt")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_text("a document")
    os.mkfifo(tmp_path / "folder" / "b.txt")
    (tmp_path / "folder" / "c.txt").symlink_to(tmp_path / "nowhere.txt")
    for source, match in (("x.txt", "x.txt: a FIFO"), ("folder", "b.txt: a FIFO")):
        stop, thread = _unblocked(tmp_path / source if source.endswith(".txt") else tmp_path / "folder" / "b.txt")
        try:
            refused(a_dataset.main, dataset_args(tmp_path / "data", "x", tmp_path / source, llama), tmp_path, match)
        finally:
            stop.set()
            thread.join()
    os.remove(tmp_path / "folder" / "b.txt")  # a broken link is no input either, and is not left out silently
    refused(a_dataset.main, dataset_args(tmp_path / "data", "x", tmp_path / "folder", llama), tmp_path, "c.txt")


# ----------------------------------------------------------------------------- 3. which ran out


def test_the_pool_running_out_is_told_apart_from_the_dataset(llama, tmp_path):
    documents = [f"Document {i}: gated neurons read one direction and write another one." for i in range(60)]
    corpus = write_corpus(tmp_path / "c.jsonl", documents)
    mtokens = 0.001  # a goal of 1,000 tokens; a pool of 4 documents of about 70 tokens each (one token a byte)
    base = ["--datadir", tmp_path / "data", "--dataset", corpus, "--tokenizer", llama, "--mtokens", mtokens,
            "--max_length", 256]
    out = succeeds(a_dataset.main, base + ["--save_to", "pool"]).out
    pool = int(POOL_PER_MTOKEN * mtokens)
    meta = load_tokenized(tmp_path / "data" / "pool")[1]
    assert meta["documents"] == pool < len(documents) and meta["tokens"] < 1000 <= sum(len(d) + 1 for d in documents)
    assert f"pool ran out after {pool} documents of the dataset's {len(documents)}" in out, out
    assert "--save_all" in out and "the dataset has fewer tokens" not in out
    assert "--save_all" in a_dataset.build_parser()._option_string_actions
    # a dataset smaller than the pool: the dataset ran out, as before
    small = write_corpus(tmp_path / "small.jsonl", documents[:3])
    out = succeeds(a_dataset.main, base[:3] + [small] + base[4:] + ["--save_to", "small"]).out
    assert "the dataset has fewer tokens than asked" in out and "pool" not in out.split("note:")[-1]


# ----------------------------------------------------------------------------- 4. long documents


class RecordingTokenizer:
    """A tokenizer that notes the longest text it was asked to tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer, self.longest = tokenizer, 0

    def __call__(self, texts, **kwargs):
        self.longest = max([self.longest, *(len(t) for t in ([texts] if isinstance(texts, str) else texts))])
        return self.tokenizer(texts, **kwargs)

    def __len__(self):
        return len(self.tokenizer)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def long_texts(length: int = 200_000) -> list[str]:
    """Long documents where every cut falls inside a word or amid multi-byte characters: prose with accents, CJK and
    emoji; one word without spaces; CJK without spaces; code with runs of spaces; and two documents that differ
    only at their end (not duplicates), one of them twice (a duplicate)."""
    gen = random.Random(3)
    words = "gated neurons read a direction ä façade naïve ✓ 漢字 😀 and write another \n\n".split(" ")
    prose = " ".join(gen.choice(words) for _ in range(length // 3))[:length]
    return [prose, ("abcdefghij" * (length // 10 + 1))[:length], ("漢字仮名交じり文😀ß" * (length // 10))[:length],
            ("def f(x):\n        return x  # ✓\n" * (length // 30))[:length], prose + " the end", prose + " another end",
            prose + " the end"]


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_source):
    return load_tokenizer(smollm2_source)


@pytest.mark.parametrize("which", ["smollm2", "bytes"])
def test_long_documents_are_tokenized_only_as_far_as_kept(which, smollm2_tokenizer, llama):
    tokenizer = smollm2_tokenizer if which == "smollm2" else load_tokenizer(resolve_model(str(llama)))
    texts = long_texts()
    whole = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    source = datasets.Dataset.from_dict({"text": texts})
    bos = tokenizer.bos_token_id
    for max_length in (2, 3, 17, 100, 1024, 1500):
        recording = RecordingTokenizer(tokenizer)
        dataset, meta = build_dataset(source, recording, None, max_length, drop_duplicates=True)
        expected = sorted([bos] + ids[:max_length - 1] for ids in whole[:-1])  # the last text duplicates the fifth
        assert sorted(dataset["input_ids"]) == expected and meta["duplicates_dropped"] == 1
        assert recording.longest <= len(texts[0]) // 4, (max_length, recording.longest)
    padded, _ = build_dataset(source, tokenizer, None, 100, padding=True)
    assert sorted(padded["input_ids"]) == sorted([bos] + ids[:99] for ids in whole)  # full rows: nothing padded
    split, _ = build_dataset(datasets.Dataset.from_dict({"text": texts[1:3]}), tokenizer, None, 1024, overflow=True)
    pieces = [[bos] + ids[i:i + 1023] for ids in whole[1:3] for i in range(0, len(ids), 1023)]
    assert sorted(split["input_ids"]) == sorted(pieces)  # --return_overflowing_tokens: every token of the whole text


# ----------------------------------------------------------------------------- 5. one name check


BAD_NAMES = {  # name: what the error line says
    "my data": "' '",
    "tab\there": "'\\t'",
    "two\nlines": "'\\n'",
    "bytes\udcff": "'\\udcff'",  # a name given as bytes that are not UTF-8
    "zero\u200bwidth": "'\\u200b'",
    "-x": "starts with '-'",
    ".docs.abc.partial": "starting with '.'",  # would be removed as a leftover of `--save_to docs`
    "docs.lock": "ending in .lock",  # the lock file of `docs`
    "*": "'*'",  # a pattern: `--save_to '*'` removed every dataset's leftovers, also those of running writes
    "x#y": "'#'",  # breaks the links of the model's index to ablation/<dataset>/
    "a" * 245: "too long",
    "ä" * 120: "too long",  # 240 bytes in UTF-8
}


def test_one_name_check_for_every_folder_name(work, tmp_path):
    """A name that a_dataset.py --save_to accepts is accepted by every script that reads or writes a folder of that
    name inside --datadir, and the names that some of them would fail on are refused by all, in one line."""
    model, datadir = work["model"], tmp_path / "data"
    for name, match in BAD_NAMES.items():
        for script, flags in ((a_dataset, ["--datadir", datadir, "--dataset", work["corpus"], "--tokenizer", model]),
                              (b_activations, ["--model", model, "--datadir", work["datadir"], "--device", "cpu"]),
                              (d_recompute_vis, ["--model", model, "--datadir", work["datadir"], "--neurons", "0.1"]),
                              (e_ablate, ["--model", model, "--datadir", work["datadir"]])):
            for flag in ("--save_to", "--dataset", "--activations"):
                if flag in script.build_parser()._option_string_actions and (script, flag) != (a_dataset, "--dataset"):
                    line = refused(script.main, [*flags, f"{flag}={name}"], tmp_path, "plain folder name")
                    assert match in line and len(line) < 400, line
    # names of letters of any script, digits and a few signs go through
    name = "données-1.5+v2"
    succeeds(a_dataset.main, dataset_args(datadir, name, work["corpus"], model))
    succeeds(b_activations.main, ["--model", model, "--datadir", datadir, "--dataset", name, "--save_to", f"{name}_stats",
                                  "--examples_per_neuron", 2, "--batch_size", 3, "--device", "cpu"])
    assert call(d_recompute_vis.main, ["--model", model, "--datadir", datadir, "--activations", f"{name}_stats",
                                       "--results_dir", tmp_path / "results", "--device", "cpu",
                                       "--neurons", "0.1"]).code == 0
