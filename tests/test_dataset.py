"""a_dataset.py: the seed's selection kept exactly (in blocks, in several processes), tokenizers without BOS (OLMo's),
exact duplicates dropped and counted, and --streaming reading only what it needs."""

from __future__ import annotations

import json
import random
import shutil

import datasets
import pytest

from gated_core.cli import run_main
from neuroscope import a_dataset
from neuroscope.constants import POOL_PER_MTOKEN, SHUFFLE_SEED
from neuroscope.data import tokenization as D
from neuroscope.data.dataset_store import load_tokenized
from neuroscope.data.tokenization import build_dataset
from wcos_casestudies.synthetic import byte_tokenizer

WORDS = "gate linear output neuron residual stream token weight cosine layer ä ✓ \n".split(" ")


def random_texts(n: int, seed: int = 0, longest: int = 2000) -> list[str]:
    """Documents of 0 to `longest` characters (a few empty), words from a small vocabulary."""
    gen = random.Random(seed)
    texts = []
    for _ in range(n):
        length = gen.choice([0, 1, gen.randint(1, longest), gen.randint(1, longest)])
        words = []
        while sum(len(w) + 1 for w in words) < length:
            words.append(gen.choice(WORDS))
        texts.append(" ".join(words)[:length])
    return texts


def seed_selection(texts, tokenizer, mtokens, max_length, add_bos=True, overflow=False, drop_duplicates=False):
    """The seed's a_dataset.py, one document at a time: shuffle, pool of 4000 x Mtokens, tokenize, keep until the goal."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    room = max_length - (1 if add_bos else 0)
    shuffled = texts.shuffle(seed=SHUFFLE_SEED)
    goal = None if mtokens is None else int(round(mtokens * 1_000_000))
    if goal is not None:
        shuffled = shuffled.select(range(min(len(shuffled), max(1, int(POOL_PER_MTOKEN * mtokens)))))
    rows, total, seen = [], 0, set()
    for text in shuffled["text"]:
        if drop_duplicates and text in seen:
            continue
        seen.add(text)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for piece in [ids[i:i + room] for i in range(0, len(ids), room)] if overflow else [ids[:room]]:
            row = ([bos] if add_bos else []) + piece
            if row:
                rows.append(row)
                total += len(row)
            if goal is not None and total >= goal:
                return rows
    return rows


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return byte_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def texts():
    documents = random_texts(3000)
    documents[10:20] = documents[:10]  # exact duplicates
    return datasets.Dataset.from_dict({"text": documents})


CASES = {  # mtokens, max_length, add_bos, overflow, padding
    "goal": (0.05, 1024, True, False, False),
    "goal_overflow_no_bos": (0.05, 100, False, True, False),
    "all_padded": (None, 64, True, False, True),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("small_blocks", [False, True])
def test_default_selection_is_the_seeds(tokenizer, texts, case, small_blocks, monkeypatch):
    mtokens, max_length, add_bos, overflow, padding = CASES[case]
    if small_blocks:  # many blocks of a few documents, each tokenized on its own
        monkeypatch.setattr(D, "MAX_BLOCK_DOCUMENTS", 7)
        monkeypatch.setattr(D, "MIN_BLOCK_DOCUMENTS", 1)
    for drop in (False, True):
        expected = seed_selection(texts, tokenizer, mtokens, max_length, add_bos, overflow, drop)
        dataset, meta = build_dataset(texts, tokenizer, mtokens, max_length, add_bos, overflow, padding, drop_duplicates=drop)
        lengths = [len(row) for row in expected]
        assert list(dataset["length"]) == lengths and meta["tokens"] == sum(lengths)
        if padding:
            pad = tokenizer.pad_token_id
            assert list(dataset["input_ids"]) == [row + [pad] * (max_length - len(row)) for row in expected]
            assert list(dataset["attention_mask"]) == [[1] * n + [0] * (max_length - n) for n in lengths]
        else:
            assert list(dataset["input_ids"]) == expected
            assert list(dataset["attention_mask"]) == [[1] * n for n in lengths]
        assert meta["max_token_id"] == max(max(row) for row in expected)
        assert (meta["duplicates_dropped"] is None) == (not drop)
    if mtokens is not None:
        assert meta["reached_goal"] and meta["tokens"] >= meta["goal_tokens"] > meta["tokens"] - max_length


def test_several_processes_give_the_same_dataset(tokenizer, texts, monkeypatch):
    monkeypatch.setattr(D, "MIN_DOCUMENTS_PER_PROCESS", 10)
    one, _ = build_dataset(texts, tokenizer, None, 256, drop_duplicates=True)
    two, meta = build_dataset(texts, tokenizer, None, 256, num_proc=2, drop_duplicates=True)
    assert list(two["input_ids"]) == list(one["input_ids"])
    assert list(two["input_ids"]) == seed_selection(texts, tokenizer, None, 256, drop_duplicates=True)
    assert meta["duplicates_dropped"] == len(texts) - len(set(texts["text"])) >= 10


def _jsonl(path, documents):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in documents))
    return path


@pytest.fixture(scope="module")
def no_bos_checkpoint(tiny_models, tmp_path_factory):
    """The tiny OLMo with a tokenizer that has no BOS token (as OLMo-7B-0424-hf's), EOS <eos> = 257."""
    folder = tmp_path_factory.mktemp("olmo_no_bos") / "olmo"
    shutil.copytree(tiny_models["olmo"], folder)
    tokenizer = byte_tokenizer(folder)
    tokenizer.bos_token = None
    tokenizer.save_pretrained(folder)
    return folder


def test_tokenizer_without_bos_starts_documents_with_eos(no_bos_checkpoint, tmp_path, capsys):
    source = _jsonl(tmp_path / "docs.jsonl", random_texts(50, seed=1, longest=300))
    base = ["--tokenizer", str(no_bos_checkpoint), "--dataset", str(source), "--datadir", str(tmp_path), "--num_proc", "1"]
    assert run_main(a_dataset.main, base + ["--save_to", "eos"]) == 0
    out = capsys.readouterr().out
    assert "no BOS token" in out and "'<eos>' (id 257)" in out
    dataset, meta = load_tokenized(tmp_path / "eos")
    assert meta["bos_is_eos"] and meta["add_bos_token"] and meta["bos_token_id"] == 257 and meta["bos_token"] == "<eos>"
    assert all(ids[0] == 257 for ids in dataset["input_ids"])
    # --no_bos_token: the documents without anything first, nothing said about EOS
    assert run_main(a_dataset.main, base + ["--save_to", "bare", "--no_bos_token"]) == 0
    assert "no BOS token" not in capsys.readouterr().out
    bare, bare_meta = load_tokenized(tmp_path / "bare")
    assert not bare_meta["add_bos_token"] and bare_meta["bos_token_id"] is None
    assert [ids[1:] for ids in dataset["input_ids"] if len(ids) > 1][:5] == [ids for ids in bare["input_ids"] if ids][:5]


def test_duplicates_are_dropped_and_counted(tiny_models, tmp_path, capsys):
    """The embedded Python documentation has 63 exact duplicate documents."""
    base = ["--tokenizer", str(tiny_models["llama"]), "--datadir", str(tmp_path), "--save_all", "--num_proc", "1"]
    assert run_main(a_dataset.main, base + ["--save_to", "unique"]) == 0
    assert "dropped 63 exact duplicate documents (of 600 read)" in capsys.readouterr().out
    unique, meta = load_tokenized(tmp_path / "unique")
    assert meta["duplicates_dropped"] == 63 and meta["documents"] == len(unique) == 537
    assert run_main(a_dataset.main, base + ["--save_to", "all", "--keep_duplicates"]) == 0
    everything, meta = load_tokenized(tmp_path / "all")
    assert len(everything) == 600 and meta["duplicates_dropped"] is None
    assert "exact duplicate" not in capsys.readouterr().out


def test_streaming_reads_only_what_it_needs(tokenizer):
    """A stream of a million documents: the buffered shuffle reads one buffer plus the documents it uses."""
    read = []

    def documents():
        gen = random.Random(5)
        for index in range(1_000_000):
            read.append(index)
            yield {"text": " ".join(gen.choice(WORDS) for _ in range(gen.randint(20, 200)))}

    stream = datasets.IterableDataset.from_generator(documents)
    dataset, meta = build_dataset(stream, tokenizer, 0.02, 256, buffer_size=300, drop_duplicates=True)
    assert meta["tokens"] >= 20_000 and meta["reached_goal"] and "streaming" in meta["selection"]
    used = meta["documents_read"]
    assert used >= len(dataset) and len(read) <= used + 300 + 1000  # a buffer and a block's estimate at most
    assert len(read) < 5000
    # every row is a document of the stream, BOS first, truncated
    assert all(ids[0] == tokenizer.bos_token_id and len(ids) <= 256 for ids in dataset["input_ids"])


def test_streaming_script_on_local_files_and_an_unreachable_hub(tiny_models, tmp_path, capsys):
    source = _jsonl(tmp_path / "docs.jsonl", random_texts(400, seed=2, longest=2000))
    base = ["--tokenizer", str(tiny_models["llama"]), "--dataset", str(source), "--datadir", str(tmp_path),
            "--Mtokens", "0.02", "--num_proc", "1"]
    assert run_main(a_dataset.main, base + ["--save_to", "streamed", "--streaming", "--buffer_size", "50"]) == 0
    assert run_main(a_dataset.main, base + ["--save_to", "seed"]) == 0
    streamed, meta = load_tokenized(tmp_path / "streamed")
    seed, seed_meta = load_tokenized(tmp_path / "seed")
    assert meta["reached_goal"] and seed_meta["reached_goal"] and "buffered shuffle of 50" in meta["selection"]
    assert list(streamed["input_ids"]) != list(seed["input_ids"])  # another selection, documented
    capsys.readouterr()
    assert run_main(a_dataset.main, ["--tokenizer", str(tiny_models["llama"]), "--dataset", "nobody/no-such-dataset",
                                     "--datadir", str(tmp_path), "--save_to", "x", "--streaming"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "streamable" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_papers_run_streams_the_hub_dataset(no_bos_checkpoint, tmp_path, monkeypatch, capsys):
    """The paper's command with --streaming, the hub replaced by a stream made here: load_dataset is asked for a
    stream (nothing is downloaded whole), and every document starts with EOS."""
    calls = []

    def fake_load_dataset(name, split=None, streaming=False, **kwargs):
        calls.append((name, split, streaming))
        texts = random_texts(2000, seed=3)
        return datasets.IterableDataset.from_generator(lambda: ({"text": t, "id": str(i)} for i, t in enumerate(texts)))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    argv = ["--datadir", str(tmp_path), "--save_to", "dolma_small", "--dataset", "emozilla/dolma-v1_7-3B",
            "--tokenizer", str(no_bos_checkpoint), "--Mtokens", "0.05", "--streaming", "--num_proc", "1"]
    assert run_main(a_dataset.main, argv) == 0
    assert calls == [("emozilla/dolma-v1_7-3B", "train", True)]
    dataset, meta = load_tokenized(tmp_path / "dolma_small")
    assert meta["reached_goal"] and meta["bos_is_eos"] and all(ids[0] == 257 for ids in dataset["input_ids"])
    assert meta["dataset"] == "emozilla/dolma-v1_7-3B" and "streaming" in meta["selection"]
    assert "no BOS token" in capsys.readouterr().out
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.IterableDataset.from_generator(
        lambda: iter([{"content": "x"}])))
    assert run_main(a_dataset.main, argv[:3] + ["other"] + argv[4:]) == 2
    assert "no 'text' column (columns: content)" in capsys.readouterr().err
