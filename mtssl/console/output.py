"""Printing user-supplied text (paths, specs, plugin errors) with Rich, never as markup.

A folder called ``ward[bold]`` or an error quoting ``[/b]`` must print as
written: messages are built as :class:`rich.text.Text` with the styled label
kept apart from the plain message.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.text import Text

if TYPE_CHECKING:
    from mtssl.plugins import PluginHost

__all__ = ["escape", "plain", "labelled", "say", "load_host"]


def plain(text: object, style: str = "") -> Text:
    """Any value as literal text: brackets stay brackets."""
    return Text(str(text), style=style)


def labelled(label: str, style: str, message: object) -> Text:
    """``label`` in ``style`` followed by ``message`` as literal text."""
    return Text.assemble((label, style), " ", str(message))


def say(console: Console, label: str, style: str, message: object) -> None:
    """Print one labelled line, soft-wrapped so it stays one line in files and pipes."""
    console.print(labelled(label, style, message), soft_wrap=True, highlight=False)


def load_host(console: Console | None = None) -> "PluginHost":
    """The installed plugins; those that failed to load are named on ``console`` (the rest still load)."""
    from mtssl.plugins import PluginHost

    host = PluginHost()
    if host.failures and console is not None:
        for failure in host.failures:
            skipped = "" if failure.component else " skipped"  # else the error says which component is left out
            say(console, "Warning:", "yellow",
                f"plugin '{failure.plugin}' ({failure.distribution}){skipped}: {failure.error}")
    return host
