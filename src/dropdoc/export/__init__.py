"""Exporting what dropdoc measures to other systems: `dropdoc serve`, a Prometheus exporter.

    sampling.py    one namespace per scrape: Meter totals, listeners, UDP sockets, source health
                   (plain data, bounded label sets; no prometheus_client here)
    owners.py      socket inode -> process, rescanned only when a new top socket is unknown
    tracing.py     one kfree_skb tracer for the exporter's lifetime, counts by netns and reason
    prometheus.py  the metric contract (names, labels), the Collector and the single-flight cache
    http.py        --listen parsing (loopback unless --allow-remote) and a bounded HTTP server

The metric names are a contract (alert rules and the dashboard are written against them):
add metrics freely, never rename or remove one.
"""

from .prometheus import Exporter

__all__ = ["Exporter"]
