"""Reproducible fault scenarios in network namespaces (`dropdoc lab`)."""
