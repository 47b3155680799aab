"""``.. command-help:: NAME``: a management command's ``--help``, generated at build time.

The text comes from the command's own parser, so the manual shows the options
the code has, not a copy that can drift.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management import load_command_class
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

APP = "django_redis_sessions"
WIDTH = "80"  # argparse wraps to $COLUMNS: a fixed width keeps the build reproducible


def command_help(name: str) -> str:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = load_command_class(APP, name).create_parser("manage.py", name)
        return parser.format_help().rstrip()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


class CommandHelp(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        text = f"$ python manage.py {self.arguments[0]} --help\n{command_help(self.arguments[0])}"
        block = nodes.literal_block(text, text, language="text")
        block["classes"].append("command-help")
        return [block]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("command-help", CommandHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
