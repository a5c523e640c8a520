"""How the IO classes are named where a reader sees them: the paper's words (enrichment, depletion) or those of the
authors' follow-up ("weakening neurons", `sjgerstner/RW_functionalities`: strengthening, weakening, in every variant:
atypical, conditional; proportional change and orthogonal output keep their names).

Stored values and file names keep the paper's spelling, so that results made with either naming stay comparable;
only what is shown changes: every text of a plot (`plotting.save_figure`), Markdown tables (`artifacts.write_table`),
printed lines, the pages and the viewer. The naming in use is a display setting, as matplotlib's rcParams are: a
script sets it for its run from its `--naming` flag (`naming_in_use`), a notebook for its session (`use_naming`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# naming -> paper's word -> the word shown
NAMINGS: dict[str, dict[str, str]] = {
    "paper": {},
    "strengthening": {"enrichment": "strengthening", "depletion": "weakening"},
}
DEFAULT_NAMING = "paper"
# a class word of the paper's, or of either naming, on its own (also within command-line words: conditional_depletion)
PAPER_WORD = re.compile(r"(?<![A-Za-z])(enrichment|depletion)(?![A-Za-z])", re.IGNORECASE)
CLASS_WORD = re.compile(r"(?<![A-Za-z])(enrichment|depletion|strengthening|weakening)(?![A-Za-z])", re.IGNORECASE)

_in_use: ContextVar[str] = ContextVar("naming", default=DEFAULT_NAMING)


def naming() -> str:
    """The naming in use."""
    return _in_use.get()


def check_naming(name: str) -> str:
    """`name` where it is a naming (a ValueError naming the others where not)."""
    if name not in NAMINGS:
        raise ValueError(f"no naming {name!r}: {', '.join(NAMINGS)}")
    return name


@contextmanager
def naming_in_use(name: str) -> Iterator[None]:
    """Show the classes in the naming `name` within the block (a script's run)."""
    token = _in_use.set(check_naming(name))
    try:
        yield
    finally:
        _in_use.reset(token)


def use_naming(name: str) -> None:
    """Show the classes in the naming `name` from now on (a notebook's session)."""
    _in_use.set(check_naming(name))


def same_case(word: str, like: str) -> str:
    """`word` written in the case of `like` (lower, Capitalised or UPPER)."""
    if like.isupper():
        return word.upper()
    return word.capitalize() if like[:1].isupper() else word


def shown(text: str, name: str | None = None) -> str:
    """`text` (in the paper's words, as everything stored is) with its class words in the naming `name` (None: the one
    in use)."""
    words = NAMINGS[check_naming(name or naming())]
    if not words:
        return text
    return PAPER_WORD.sub(lambda found: same_case(words[found.group(0).lower()], found.group(0)), text)


def canonical_word(word: str) -> str:
    """The paper's spelling of a class word of either naming."""
    back = {shown_as: paper for table in NAMINGS.values() for paper, shown_as in table.items()}
    return back.get(word, word)


def canonical(text: str) -> str:
    """`text` with its class words in the paper's spelling (what is stored; e.g. a class named on the command line)."""
    return CLASS_WORD.sub(lambda found: same_case(canonical_word(found.group(0).lower()), found.group(0)), text)
