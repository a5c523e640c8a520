"""The one template loader of the project's HTML pages: Jinja2 templates in a `templates/` folder beside the package
that writes the page (`wcos_casestudies/templates/`, `neuroscope/view/templates/`, `neuroscope/probe/templates/`).

Every value a template prints is escaped (autoescape) unless it is `Markup` (`safe`: HTML or script text made by the
caller's own, checked code, e.g. the inline JSON of `neuroscope.view.neuron_view.js_call`). Values are escaped the way
the pages always were, by `html.escape` (`&`, `<`, `>`, `"` and `'` as `&#x27;`), so that pages stay byte for byte the
same; a name a template uses but is not given is an error (StrictUndefined), never an empty string.
"""

from __future__ import annotations

import functools
import html
from typing import Any

import jinja2
from markupsafe import Markup

__all__ = ["Markup", "escaped", "render"]


def escaped(value: Any) -> Markup:
    """A value as the page prints it: Markup as it is, anything else as text escaped by `html.escape`."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value)))


@functools.cache
def environment(package: str) -> jinja2.Environment:
    """The Jinja2 environment of the templates of `package` (its `templates/` folder)."""
    return jinja2.Environment(loader=jinja2.PackageLoader(package, "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, finalize=escaped, keep_trailing_newline=True)


def render(package: str, template: str, **values: Any) -> str:
    """The page of `template` (a file of `package`'s templates/ folder) with `values`, every one escaped unless Markup."""
    return environment(package).get_template(template).render(**values)
