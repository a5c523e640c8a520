"""Tokens per second of a_dataset.py on about 20M tokens' worth of local text (the paper's --mtokens 20).

Makes a JSON-lines file of documents built from Python's documentation topics (each document 1 to 8 topics
joined, shuffled, so that no two are alike and lengths vary like web text), then times a_dataset.py end to end
(load, tokenize, select, save) with the embedded SmolLM2 tokenizer: the seed's selection in 1 and N processes,
--streaming in 1 and N processes, and the previous per-document Python loop (with the same save) for comparison.
On a shared machine the load average matters: it is printed with the table.

  python benchmarks/bench_dataset.py                 # ~20M tokens, writes /tmp/bench_dataset/
  python benchmarks/bench_dataset.py --mtokens 2     # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

DOCUMENTS_PER_MTOKEN = 3000  # ~570 tokens per document: 1.7x the tokens asked for


def write_corpus(path: Path, n_documents: int, seed: int = 0) -> Path:
    """`n_documents` JSON lines, each 1 to 8 documentation topics joined in random order."""
    from neuroscope.data.texts import embedded_documents

    topics = embedded_documents()
    gen = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for index in range(n_documents):
            parts = gen.sample(topics, gen.randint(1, 8))
            handle.write(json.dumps({"text": f"[{index}] " + "\n\n".join(parts)}) + "\n")
    return path


def time_script(argv: list[str]) -> tuple[float, dict]:
    """Seconds of one a_dataset.py run and the metadata it wrote."""
    from gated_core.cli import run_main
    from neuroscope import a_dataset

    started = time.perf_counter()
    assert run_main(a_dataset.main, argv) == 0
    seconds = time.perf_counter() - started
    folder = Path(argv[argv.index("--datadir") + 1]) / argv[argv.index("--save_to") + 1]
    return seconds, json.loads((folder / "neuroscope_meta.json").read_text())


def time_previous_loop(corpus: Path, mtokens: float, datadir: Path) -> tuple[float, int]:
    """The previous a_dataset.py: the seed's selection tokenized one document at a time in a Python loop, then
    `Dataset.from_dict` and the same atomic save."""
    import datasets

    from gated_core.models.loading import load_tokenizer
    from gated_core.models.sources import resolve_model
    from neuroscope.constants import POOL_PER_MTOKEN, SHUFFLE_SEED
    from neuroscope.data.dataset_store import save_dataset
    from neuroscope.data.texts import load_texts

    started = time.perf_counter()
    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    texts = load_texts(str(corpus)).shuffle(seed=SHUFFLE_SEED)
    texts = texts.select(range(min(len(texts), int(POOL_PER_MTOKEN * mtokens))))
    goal, total, rows = int(mtokens * 1_000_000), 0, []
    for row in texts:
        rows.append([tokenizer.bos_token_id] + tokenizer(row["text"], add_special_tokens=False)["input_ids"][:1023])
        total += len(rows[-1])
        if total >= goal:
            break
    dataset = datasets.Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows],
                                          "length": [len(r) for r in rows]})
    save_dataset(dataset, {"tokens": total}, datadir / "previous", overwrite=True)
    shutil.rmtree(datadir / "previous")
    return time.perf_counter() - started, total


def time_builds(corpus: Path, mtokens: float, datadir: Path, num_proc: int) -> list[tuple[str, int, float, int]]:
    """(build, processes, seconds, tokens kept) of each way to build the dataset, once."""
    seconds, tokens = time_previous_loop(corpus, mtokens, datadir)
    rows = [("previous: seed's selection, per-document loop", 1, seconds, tokens)]
    for streaming in (False, True):
        for procs in sorted({1, num_proc}):
            argv = ["--datadir", str(datadir), "--save_to", "bench", "--overwrite", "--dataset", str(corpus),
                    "--mtokens", f"{mtokens:g}", "--num_proc", str(procs)] + (["--streaming"] if streaming else [])
            seconds, meta = time_script(argv)
            label = "--streaming (buffered shuffle)" if streaming else "default: seed's selection"
            rows.append((label, procs, seconds, meta["tokens"]))
            shutil.rmtree(datadir / "bench", ignore_errors=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtokens", type=float, default=20.0, help="millions of tokens to keep (the paper's 20)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_dataset"), help="corpus and datasets (scratch)")
    parser.add_argument("--num_proc", type=int, default=os.cpu_count() or 2, help="the N of the N-process rows")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every build; the table shows the fastest")
    args = parser.parse_args()
    corpus = args.workdir / f"corpus_{args.mtokens:g}M.jsonl"
    if not corpus.exists():
        write_corpus(corpus, int(DOCUMENTS_PER_MTOKEN * args.mtokens))
    from neuroscope.data.texts import load_texts

    started = time.perf_counter()
    load_texts(str(corpus))  # the one-time JSON -> Arrow conversion (cached by datasets), not timed below
    print(f"corpus {corpus} ({corpus.stat().st_size / 2**20:.0f} MiB); Arrow conversion {time.perf_counter() - started:.1f} s")
    runs = [time_builds(corpus, args.mtokens, args.workdir / "data", args.num_proc) for _ in range(args.repeats)]
    rows = [min(same, key=lambda row: row[2]) for same in zip(*runs)]  # the fastest of the repeats
    load = os.getloadavg()[0]
    print(f"\na_dataset.py, {args.mtokens:g}M tokens of local JSON lines, SmolLM2 tokenizer, {os.cpu_count()} CPU cores "
          f"(load average at the end {load:.1f}), fastest of {args.repeats}\n")
    print("| build | processes | seconds | tokens kept | tokens/s |")
    print("|---|---|---|---|---|")
    for label, procs, seconds, tokens in rows:
        print(f"| {label} | {procs} | {seconds:.1f} | {tokens:,} | {tokens / seconds:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
