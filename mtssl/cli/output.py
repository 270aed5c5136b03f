"""Printing user-supplied text (paths, specs, plugin errors) with Rich, never as markup.

A folder called ``ward[bold]`` or an error quoting ``[/b]`` must print as
written: messages are built as :class:`rich.text.Text` with the styled label
kept apart from the plain message.
"""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.text import Text

__all__ = ["escape", "plain", "labelled", "say"]


def plain(text: object, style: str = "") -> Text:
    """Any value as literal text: brackets stay brackets."""
    return Text(str(text), style=style)


def labelled(label: str, style: str, message: object) -> Text:
    """``label`` in ``style`` followed by ``message`` as literal text."""
    return Text.assemble((label, style), " ", str(message))


def say(console: Console, label: str, style: str, message: object) -> None:
    """Print one labelled line, soft-wrapped so it stays one line in files and pipes."""
    console.print(labelled(label, style, message), soft_wrap=True, highlight=False)
