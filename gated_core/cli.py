"""The command-line vocabulary of every script of both packages: the parser and its help format, the model,
device and dtype flags, number and name types, output locations, and one line with exit status 2 for a user's
mistake (`run_main`). The flags of one package live in that package (`wcos_casestudies/cli.py`: the weight
settings; `neuroscope/cli.py`: data, statistics and neurons).

Nothing heavy is imported at module level, so that `--help` answers at once; torch is imported
only when a device or dtype is parsed.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .constants import DEFAULT_MODEL, DEFAULT_RESULTS, DTYPES
from .errors import UserError, system_error_line
from .naming import DEFAULT_NAMING, NAMINGS

AUTO_DEVICE = "auto"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the description's line breaks; show a flag's default once, and only when it says something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "default" in text.lower() or action.required or default is None
                or default is False or default == [] or default is argparse.SUPPRESS or not action.option_strings):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


def make_parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the project's help format."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


def add_model(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """`--model`: one model (or several, and `all`, where the script takes several); `--full_hash`: how its weights are
    fingerprinted (pass `args.full_hash` to `resolve_model`)."""
    what = ("Hugging Face id, paper name or seed alias, local checkpoint folder, .gguf file, "
            "or an embedded model (smollm2-135m, gemma-3-270m)")
    if several:
        parser.add_argument("--model", nargs="+", default=[DEFAULT_MODEL], metavar="MODEL",
                            help=what + "; several, or `all` for the paper's 12")
    else:
        parser.add_argument("--model", default=DEFAULT_MODEL, help=what)
    parser.add_argument("--full_hash", action="store_true",
                        help="fingerprint the weights by a hash of every byte (slow: reads the whole checkpoint) instead of "
                             "their files' sizes, times and sampled blocks; results recorded with one kind are refused "
                             "when checked with the other")


def add_naming(parser: argparse.ArgumentParser) -> None:
    """`--naming`: how the IO classes are shown (`gated_core.naming`); run the script within `naming_in_use(args.naming)`."""
    parser.add_argument("--naming", choices=tuple(NAMINGS), default=DEFAULT_NAMING,
                        help="how the IO classes are named in plots, Markdown tables, pages, the viewer and printed lines: "
                             "the paper's (enrichment, depletion) or its follow-up's (strengthening, weakening); stored "
                             "values and file names keep the paper's names")


def run_in_naming(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """`run(args)` with the IO classes shown in the naming of `args.naming` (`add_naming`, `gated_core.naming`)."""
    from .naming import naming_in_use

    with naming_in_use(args.naming):
        return run(args)


def add_results_dir(parser: argparse.ArgumentParser) -> None:
    """`--results_dir`: the root of the results tree (one folder per model); scripts check it with
    `check_output_location` before their work starts."""
    parser.add_argument("--results_dir", type=Path, default=DEFAULT_RESULTS, help="root of the results tree (output)")


def add_device(parser: argparse.ArgumentParser, what: str = "where the model runs") -> None:
    """`--device`: auto (CUDA when available, else CPU), cpu, cuda or cuda:N."""
    parser.add_argument("--device", default=AUTO_DEVICE, help=f"{what}: auto (CUDA when available, else CPU), cpu, cuda or cuda:N")


def add_dtype(parser: argparse.ArgumentParser) -> None:
    """`--dtype` of the model's forward pass."""
    parser.add_argument("--dtype", choices=(AUTO_DEVICE, *DTYPES), default=AUTO_DEVICE,
                        help="model dtype of the forward pass: auto (bfloat16 on CUDA, float32 on the CPU), " + ", ".join(DTYPES))


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (written in ASCII digits)."""

    def parse(text: str) -> int:
        if not text.strip().lstrip("+-").isascii() or not text.strip().lstrip("+-").isdigit():
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} must be at least {minimum}")
        return value

    parse.__name__ = "whole number"  # argparse names the type in its messages
    return parse


positive_int = whole_number(1)


non_negative_int = whole_number(0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number above 0")
    return value


MAX_NAME_BYTES = 200  # a folder name in UTF-8: file systems allow 255, the lock and temporary names beside it add up to 19


NAME_SIGNS = "_-.+=@,"  # what a folder name may hold besides letters, digits and combining marks


def name_problem(text: str) -> str | None:
    """What keeps `text` from being a plain folder name (None: nothing); see `plain_name`."""
    import unicodedata

    from .locks import LOCK_SUFFIX

    if text in ("", ".", ".."):
        return "a name inside --datadir, not '', '.' or '..'"
    odd = next((c for c in text if not (c.isalnum() or c in NAME_SIGNS or unicodedata.category(c).startswith("M"))), None)
    if odd is not None:
        return f"it holds {odd!r}: a name is letters, digits and any of {NAME_SIGNS}"
    if text.startswith("-"):
        return "it starts with '-', as a flag does"
    if text.startswith("."):
        return "a name starting with '.' is kept for hidden folders and those being written"
    if text.endswith(LOCK_SUFFIX):
        return f"a name ending in {LOCK_SUFFIX} is kept for lock files"
    size = len(text.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return f"too long: {size} bytes in UTF-8, at most {MAX_NAME_BYTES}"
    return None


def plain_name(text: str) -> str:
    """An argparse type: the name of a folder inside --datadir (a dataset, statistics) or of a viewer, one check for
    every script that writes or reads one, so that a name one script accepts works in all of them: letters and digits
    of any script and the signs of NAME_SIGNS; no path separators, white space, control or invisible characters, or
    anything a shell, a glob pattern or a URL reads otherwise; not '-' first (a flag) nor '.' first (hidden, like the
    temporary folders that a run removes beside its output); not ending in `.lock` (lock files); at most MAX_NAME_BYTES
    bytes in UTF-8 (room for the lock and temporary names beside it)."""
    problem = name_problem(text)
    if problem is not None:
        shown = text if len(text) <= 40 else f"{text[:24]}…"
        raise argparse.ArgumentTypeError(f"{shown!r} is not a plain folder name ({problem})")
    return text


def int_from_environment(name: str, default: int, minimum: int) -> int:
    """A whole number from the environment variable `name` (torchrun's WORLD_SIZE, RANK, LOCAL_RANK), or `default`."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return whole_number(minimum)(text)
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"the environment variable {name}={text!r}: {exc}") from exc


def check_output_location(path: Path, flag: str, inside: Path | None = None) -> None:
    """Refuse, before any work, an output folder that cannot be made or written: a file in its way, or a
    folder without write permission; with `inside` (the root the flag names, e.g. --results_dir), also a symbolic
    link anywhere below that root on the way to `path`: the folders there are the project's to make, and a link would
    send its writes into a folder of someone else's. Nothing is created."""
    path = Path(path)
    if inside is not None:
        check_no_links(path, flag, Path(inside))
    for candidate in (path, *path.parents):
        if candidate.is_symlink() and not candidate.exists():
            raise UserError(f"{flag} {path}: {candidate} is a broken symbolic link")
        if candidate.exists():
            break
    else:
        candidate = Path.cwd()
    if not candidate.is_dir():
        raise UserError(f"{flag} {path}: {candidate} is a file, not a folder")
    if not os.access(candidate, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {candidate} is not writable")


def check_no_links(path: Path, flag: str, inside: Path) -> None:
    """Refuse an output `path` that passes through a symbolic link below `inside` (`path` itself included)."""
    try:
        below = Path(path).relative_to(inside)
    except ValueError:
        return
    candidate = Path(inside)
    for part in below.parts:
        candidate = candidate / part
        if candidate.is_symlink():
            raise UserError(f"{flag} {inside}: {candidate} is a symbolic link; the folders below {flag} are this "
                            f"project's to make, and it does not write through links: remove the link (or move the "
                            f"folder it points to into its place), or give another {flag}")
        if not candidate.exists():
            return


def check_regular_file(path: Path, flag: str = "", reads: str = "a regular file") -> None:
    """Refuse, before anything opens it, an input (of `flag`, when it comes from one) that is missing or not a regular
    file: reading a FIFO waits for a writer for ever, a device may never end, and a broken link or a socket cannot be
    read. `reads`: what the flag takes, for the message."""
    path = Path(path)
    named = f"{flag} {path}" if flag else str(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise UserError(f"{named}: {'a broken symbolic link' if path.is_symlink() else 'no such file'}") from exc
    except OSError as exc:
        raise UserError(f"{named}: cannot read it ({exc.strerror})") from exc
    if stat.S_ISDIR(mode):
        raise UserError(f"{named}: a folder, not a file" + (f"; {flag} reads {reads}" if flag else ""))
    if not stat.S_ISREG(mode):
        kind = ("a FIFO, " if stat.S_ISFIFO(mode) else "a socket, " if stat.S_ISSOCK(mode)
                else "a device, " if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "")
        raise UserError(f"{named}: {kind}not a regular file" + (f"; {flag} reads {reads} only" if flag else ""))


def parse_device(name: str) -> Any:
    """Turn a `--device` value into a torch device, refusing ones this machine lacks."""
    import torch

    if name == AUTO_DEVICE:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def parse_dtype(name: str, device: Any = None) -> Any:
    """Turn a `--dtype` value (auto, float32, bfloat16, float16) into a torch dtype; auto is bfloat16 on
    a CUDA `device`, else float32."""
    import torch

    if name == AUTO_DEVICE:
        return torch.bfloat16 if device is not None and device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return getattr(torch, name)


INTERRUPTED = "interrupted; finished results are kept, rerun to resume"


def end_in_one_line(exc: BaseException) -> int | None:
    """Print the one line that ends a run for `exc` and return the exit status: 2 for a user's mistake and for a
    full disk, a read-only file system or a denied permission (errors.SYSTEM_ERRORS: the path and what happened),
    130 for Ctrl-C; None for anything else (a bug, whose traceback is shown)."""
    if isinstance(exc, KeyboardInterrupt):
        print(INTERRUPTED, file=sys.stderr)
        return 130
    line = str(exc) if isinstance(exc, UserError) else system_error_line(exc)
    if line is None:
        return None
    print(f"error: {line}", file=sys.stderr)
    return 2


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a script's `main`, ending a user's mistake, a system error of errors.SYSTEM_ERRORS or Ctrl-C in one line
    on stderr (`end_in_one_line`); any other exception propagates."""
    try:
        return int(main(argv) or 0)
    except (UserError, OSError, KeyboardInterrupt) as exc:
        status = end_in_one_line(exc)
        if status is None:
            raise
        return status


def in_notebook() -> bool:
    """Whether this code runs inside a Jupyter / VS Code interactive kernel: an IPython shell with a kernel is
    running (not merely imported: a script that imported ipykernel, e.g. through ipywidgets, still reads its flags)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def install_user_error_hook() -> None:
    """For cell scripts run as scripts: what `run_main` ends in one line (a UserError, a system error, Ctrl-C)
    ends the same way, with the same exit status."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        status = end_in_one_line(value)
        if status is not None:
            sys.exit(status)
        previous(kind, value, traceback)

    sys.excepthook = hook
