"""Findings as data (rules/catalogue/*.toml) evaluated over a measurement window."""

from .engine import Rule, evaluate, load_rules

__all__ = ["Rule", "evaluate", "load_rules"]
