"""Commands that live in their own module (serve, watch, report, sim …).

Each module here defines `command`, a click.Command; cli.py registers every one of them,
so adding a command touches no shared file. Modules import their heavy dependencies
(prometheus-client, sqlite, jinja2) inside the command, keeping `dropdoc --help` fast.
"""

import importlib
import pkgutil

import click


def commands() -> list[click.Command]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append(module.command)
    return found
