"""The only destinations lab traffic programs accept: the lab's own range or loopback."""

from __future__ import annotations

import ipaddress

# RFC 2544 benchmarking range; the lab puts these addresses on its own veth pairs only.
LAB_NETWORK = ipaddress.ip_network("198.18.0.0/15")


def allowed_target(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or (address.version == 4 and address in LAB_NETWORK)


def split_target(target: str) -> tuple[str, int]:
    """'198.18.0.1:9000' or '[::1]:9000' -> (host, port)."""
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)
