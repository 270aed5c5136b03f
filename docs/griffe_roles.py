"""A griffe extension for the API reference: Sphinx roles in docstrings (``:class:`Task```) become code.

mtssl's docstrings name other objects the way Sphinx does; Markdown would show the role literally.
"""
from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|meth|func|attr|data|mod|exc|obj):`~?([^`]+)`")


class SphinxRolesAsCode(griffe.Extension):
    """Rewrite every loaded docstring's roles as inline code."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
