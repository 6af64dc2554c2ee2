"""MkDocs hook: the command-line reference is written from pleat's own parsers at build time, so it cannot drift."""

from __future__ import annotations

import contextlib
import io
import re

MARKER = "<!-- the parsers' help, written at build time -->"


def _help(argv: list[str]) -> str:
    from pleat.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    return out.getvalue().rstrip()


def cli_reference() -> str:
    top = _help([])
    commands = re.search(r"\{([\w,-]+)\}", top).group(1).split(",")  # every subcommand the parser has
    parts = [f"## `pleat`\n\n```text\n{top}\n```\n"]
    parts += [f"## `pleat {c}`\n\n```text\n{_help([c])}\n```\n" for c in commands]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown
