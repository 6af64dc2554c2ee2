"""MkDocs hook: the command-line reference is written from pleat's own parsers at build time, so it cannot drift."""

from __future__ import annotations

import contextlib
import io

MARKER = "<!-- the parsers' help, written at build time -->"


def cli_reference() -> str:
    from pleat.cli import main

    parts = []
    for command in (None, "train", "reproduce", "report", "runs", "profile"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main([command, "--help"] if command else ["--help"])
        title = f"pleat {command}" if command else "pleat"
        parts.append(f"## `{title}`\n\n```text\n{out.getvalue().rstrip()}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown
