"""Data sources: one module per kernel file or netlink dump.

Importing this package imports every module in it, and each module registers its sources
in `base.SOURCES`; adding a source touches no shared file.
"""

import importlib
import pkgutil

from .base import SOURCES, ReadContext, SourceResult, read_source

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["SOURCES", "ReadContext", "SourceResult", "read_source"]
