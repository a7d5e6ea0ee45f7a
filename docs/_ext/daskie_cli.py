"""``.. daskie-cli-help:: solve``: the ``--help`` text of a ``daskie`` command, taken from the
CLI's own parser (:func:`daskie.cli.build_parser`) when the docs are built, so the page shows
every option and its configured default as ``daskie solve --help`` prints them."""

from __future__ import annotations

import os

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def help_text(command: str | None) -> str:
    """``daskie [command] --help`` as the parser formats it, 88 columns wide."""
    from daskie.cli import build_parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"
    try:
        parser = build_parser()
        if command:
            action = next(a for a in parser._actions if a.choices and command in a.choices)
            parser = action.choices[command]
        return parser.format_help()
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


class CliHelp(SphinxDirective):
    """Render one command's help as a literal block."""

    optional_arguments = 1

    def run(self):
        command = self.arguments[0] if self.arguments else None
        text = help_text(command)
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app):
    """Register the ``daskie-cli-help`` directive."""
    app.add_directive("daskie-cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
