"""Probe your own text: what chosen neurons do on it, token by token, and which neurons fire most on it.

The text (--text, --file: .txt, or .jsonl with a "text" field per line, one document each; else stdin) runs
through the model once with the activation pass's hooks (a text longer than the model's context in windows,
each its own forward pass with BOS first). Written to RESULTS/<model>/<settings>/probe/<name>/:
- probe.html, self-contained and offline: the text coloured by each --neurons neuron's activation a (a selector
  switches between them; g, u, a, the sign combination of (g, u) and, with statistics, the percentile of a on
  their dataset under the pointer), every token's top --top neurons by |a|, and the neurons that fire most on the
  whole text (with --datadir: relative to their distribution on the dataset of the statistics); each neuron
  links to its page where one exists, else to a viewer that holds it (d_recompute_vis.py --neurons all); a text
  too long for one page shows windows around its strongest tokens and its start (the page says so);
- probe.json: the same data, every token: {"tokens", "neurons": {"28.28": {"g", "u", "a", ...}}, "top": [[[name,
  a], ...] per token], "text_top", "links", "meta"}; inf and NaN are written null (meta.non_finite says where).
The folder is written as one unit, under a lock. The same text again (other neurons, say) replaces it; another
text under the same --name is refused unless --overwrite, and with the default name goes beside it.

  python f_probe.py --text "def main():\\n    return 0" --neurons 28.28 --datadir ../data --activations activations
  python f_probe.py --file notes.txt --neurons_from ../results/<model>/case_studies.txt --classes depletion --top 5
  cat essay.txt | python f_probe.py --name essay --layers 20 21 22

Give it the weight flags of main.py (--threshold, --refactor_glu, ...) to use that run's classes and folder.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gated_core.cli import (
    add_device,
    add_dtype,
    add_model,
    add_results_dir,
    make_parser,
    non_negative_int,
    plain_name,
    positive_int,
    run_main,
    whole_number,
)
from neuroscope.cli import add_neurons
from wcos_casestudies.cli import add_weight_settings


def build_parser():
    parser = make_parser(__doc__)
    add_model(parser)
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--text", default=None, help="the text to probe (default: --file, else stdin)")
    text.add_argument("--file", type=Path, default=None, help="a .txt file, or a .jsonl file with a \"text\" field per line (input)")
    parser.add_argument("--name", type=plain_name, default=None, help="the output folder's name (default: the text's first words)")
    parser.add_argument("--overwrite", action="store_true", help="replace the probe of another text under --name")
    add_neurons(parser)  # the neurons to colour the text by
    parser.add_argument("--top", type=positive_int, default=10, help="neurons by |a| per token, and in the whole-text table")
    parser.add_argument("--layers", type=non_negative_int, nargs="+", default=None, help="top lists: only these layers")
    parser.add_argument("--classes", nargs="+", default=[], metavar="CLASS",
                        help="top lists: only neurons of these IO classes (e.g. depletion)")
    parser.add_argument("--roles", nargs="+", default=[], metavar="ROLE",
                        help="top lists: only neurons of these functional roles (roles.pt of casestudies.py)")
    parser.add_argument("--datadir", type=Path, default=None,
                        help="folder of the activation statistics: percentiles of a on their dataset (default: none)")
    parser.add_argument("--activations", type=plain_name, default=None,
                        help="statistics folder inside --datadir (input; b_activations.py --save_to; default: activations)")
    parser.add_argument("--window_tokens", type=whole_number(2), default=None,
                        help="tokens per forward pass, BOS included (default and at most: the model's context)")
    add_weight_settings(parser)
    add_results_dir(parser)
    add_device(parser)
    add_dtype(parser)
    return parser


def read_text(text: str | None, file: Path | None) -> list[str]:
    """The documents to probe: --text, --file or stdin (read as bytes, decoded as UTF-8)."""
    from gated_core.errors import UserError
    from neuroscope.probe.request import read_documents, read_stdin

    if text is not None:
        return [text]
    if file is not None:
        return read_documents(file)
    if sys.stdin is None or sys.stdin.isatty():
        raise UserError("no text: give --text TEXT, --file FILE, or pipe the text into stdin")
    return [read_stdin(sys.stdin)]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gated_core.locks import hold_lock
    from neuroscope.probe.forward import run_probe
    from neuroscope.probe.probe import write_probe
    from neuroscope.probe.request import ProbeRequest, open_probe
    from wcos_casestudies.cli import settings_from_args

    request = ProbeRequest(model=args.model, documents=read_text(args.text, args.file), settings=settings_from_args(args),
                           results_dir=args.results_dir, neurons=args.neurons, neurons_from=args.neurons_from, name=args.name,
                           top=args.top, layers=args.layers, classes=args.classes, roles=args.roles, datadir=args.datadir,
                           activations=args.activations, window_tokens=args.window_tokens, loader=args.loader,
                           device=args.device, dtype=args.dtype, full_hash=args.full_hash, overwrite=args.overwrite)
    run = open_probe(request)
    with hold_lock(run.folder):
        values = run_probe(run)
        started = time.perf_counter()
        page = write_probe(run, values)
    sizes = ", ".join(f"{name} {(page.parent / name).stat().st_size / 2**20:.1f} MiB" for name in ("probe.html", "probe.json"))
    print(f"{len(run.token_ids)} tokens, {len(values.windows)} forward pass(es) in {values.seconds:.1f} s, written in "
          f"{time.perf_counter() - started:.1f} s: {page} ({sizes})")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
