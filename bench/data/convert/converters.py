"""Importing this module registers every converter: each module of this package other than
the shared machinery is one dataset's converter."""

import importlib
import pkgutil

import bench.data.convert as package

SHARED = {"base", "converters", "crop", "raw", "run", "video"}

for module in pkgutil.iter_modules(package.__path__):
    if module.name not in SHARED:
        importlib.import_module(f"{package.__name__}.{module.name}")
