"""Importing this module registers every converter."""

from bench.data.convert import lsp, mpii  # noqa: F401
