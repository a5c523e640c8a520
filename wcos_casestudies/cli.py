"""The flags of the weight-based scripts (Section 5 and 6): the weight settings that decide which cosines and classes
a run computes, and the console entry point of the cell script `casestudies.py`. The vocabulary every script
shares is `gated_core/cli.py`."""

from __future__ import annotations

import argparse
from typing import Any

from gated_core.cli import install_user_error_hook
from gated_core.constants import LOADERS
from wcos_casestudies.constants import DEFAULT_THRESHOLD


def add_weight_settings(parser: argparse.ArgumentParser) -> None:
    """The flags that decide which cosines and classes a run computes (Section 5)."""
    group = parser.add_argument_group("weights and classes (the same flags as main.py)")
    group.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="class threshold t, strictly between 0 and 1")
    group.add_argument("--legacy_copysign", action="store_true",
                       help="the first code release's typical test for (atypical) enrichment/depletion")
    group.add_argument("--refactor_glu", action="store_true",
                       help="flip w_in and w_out of neurons with w_gate·w_in < 0 (same function; gatelin >= 0)")
    group.add_argument("--no_processing", action="store_true",
                       help="raw Hugging Face weights instead of TransformerLens' default processing")
    group.add_argument("--loader", choices=LOADERS, default="auto",
                       help="lowmem: read MLP weights layer by layer from safetensors/GGUF; "
                            "tl: load the whole model in TransformerLens; auto: lowmem where supported")


def settings_from_args(args: argparse.Namespace) -> Any:
    """The results `Settings` that the weight flags of `add_weight_settings` describe (checked)."""
    from wcos_casestudies.results import Settings
    from wcos_casestudies.utils import check_threshold

    check_threshold(args.threshold)
    return Settings(processing=not args.no_processing, refactor_glu=args.refactor_glu, threshold=args.threshold,
                    rule="legacy_copysign" if args.legacy_copysign else "corrected")


def casestudies() -> None:
    """Console entry point of the cell script `casestudies.py`: run it top to bottom as `__main__`."""
    import runpy

    install_user_error_hook()
    runpy.run_module("wcos_casestudies.casestudies", run_name="__main__", alter_sys=True)
