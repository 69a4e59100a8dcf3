"""Data sources: one module per kernel file or netlink dump.

Importing this package registers every source in `base.SOURCES`.
"""

from . import (  # noqa: F401 - imported for registration
    link_stats,
    netdev,
    proc_sockets,
    process_sockets,
    snmp,
    snmp6,
    softnet,
    sysctls,
    tcp_listeners,
)
from .base import SOURCES, ReadContext, SourceResult, read_source

__all__ = ["SOURCES", "ReadContext", "SourceResult", "read_source"]
