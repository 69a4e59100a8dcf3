"""process_sockets.parse_fd_link on readlink() targets of /proc/<pid>/fd/*.

fd_links.txt holds the targets of tests/fixtures/capture_netlink.py's own fds, taken while
it held the sockets listed in capture.json.
"""

import json
from pathlib import Path

import pytest

from dropdoc.sources import process_sockets

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CAPTURE = json.loads((FIXTURES / "capture.json").read_text())


def lines(name: str) -> list[str]:
    return (FIXTURES / "process_sockets" / name).read_text(encoding="utf-8").splitlines()


def test_real_fd_links():
    inodes = [process_sockets.parse_fd_link(target) for target in lines("fd_links.txt")]
    assert [i for i in inodes if i is not None] == [s["inode"] for s in CAPTURE["sockets"]]
    assert "pipe:[" in "".join(lines("fd_links.txt"))  # a pipe is seen, and is not a socket


@pytest.mark.parametrize("target, expected", [
    ("socket:[12345]", 12345),
    ("socket:[0]", 0),
    ("socket:[18446744073709551615]", 2**64 - 1),
])
def test_socket_targets(target, expected):
    assert process_sockets.parse_fd_link(target) == expected


def test_odd_targets_are_not_sockets():
    odd = lines("fd_links_odd.txt")
    assert "socket:[\u00b2]" in odd  # a Unicode digit: str.isdigit() says yes, int() says no
    assert [process_sockets.parse_fd_link(target) for target in odd] == [None] * len(odd)


def test_socket_owners_lookup():
    owners = process_sockets.SocketOwners(owners={9090: (42, "nginx")}, unreadable_pids=1)
    assert owners.owner(9090) == (42, "nginx")
    assert owners.owner(1) is None
