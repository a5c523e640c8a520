"""Command-line conventions shared by every script: user errors, devices, exit status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import torch


class UserError(Exception):
    """A mistake of the user's (bad flag, unknown model, unreadable file): one line, exit status 2."""


def default_device() -> str:
    """CUDA when available, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(name: str) -> torch.device:
    """Turn a `--device` value into a torch device, refusing ones this machine lacks."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def parse_dtype(name: str) -> torch.dtype:
    """Turn a `--dtype` value (float32, bfloat16, float16) into a torch dtype."""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise UserError(f"unknown dtype {name!r}; use one of {', '.join(dtypes)}")
    return dtypes[name]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the description's line breaks."""


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a script's `main`, turning a UserError into one line on stderr and exit status 2."""
    try:
        return int(main(argv) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished results are kept, rerun to resume", file=sys.stderr)
        return 130


def in_notebook() -> bool:
    """Whether this code runs inside a Jupyter / VS Code interactive kernel."""
    return "ipykernel" in sys.modules and "IPython" in sys.modules


def install_user_error_hook() -> None:
    """For cell scripts run as scripts: a UserError ends with one line on stderr and exit status 2."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        if issubclass(kind, UserError):
            print(f"error: {value}", file=sys.stderr)
            sys.exit(2)
        previous(kind, value, traceback)

    sys.excepthook = hook
