"""Importing this module registers every converter."""

from bench.data.convert import lsp  # noqa: F401
