"""The small YAML subset the shipped files need: no YAML library is among dropdoc's
dependencies, and Prometheus/promtool parse what this writes (the unit tests run them)."""

from __future__ import annotations

import json
import re

from .rules import number

PLAIN = re.compile(r"^([A-Za-z_][A-Za-z0-9_ .:/+-]*|[0-9]+[smhdw])$")
RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return number(value)
    text = str(value)
    if PLAIN.match(text) and text.lower() not in RESERVED and not text.endswith(" ") and ": " not in text \
            and " #" not in text:
        return text
    if "\n" not in text and text.isprintable():
        return "'" + text.replace("'", "''") + "'"  # single-quoted: only ' needs escaping
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(value, indent: int = 0) -> str:
    """The small YAML subset the shipped files need (no YAML library among the dependencies)."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            elif isinstance(item, list):
                lines.append(f"{pad}{key}: []")
            else:
                lines.append(f"{pad}{key}: {yaml_scalar(item) if not isinstance(item, dict) else '{}'}")
        return "\n".join(lines)
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                inner = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {inner[indent + 2:]}")
            else:
                lines.append(f"{pad}- {yaml_scalar(item)}")
        return "\n".join(lines)
    return pad + yaml_scalar(value)
