"""network_conf parsers and read() on captures: the host (eth0, default routes, an IPv6
neighbour in FAILED) and a lab router namespace (strict rp_filter on one veth, a 1280 MTU
link, a gateway route, an unreachable route, INCOMPLETE and FAILED neighbours)."""

from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.sources import SOURCES, network_conf
from dropdoc.sources.base import ReadContext, read_source

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "network_conf"
HOST, LAB = FIXTURES / "host", FIXTURES / "lab_router"


def text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def replay(directory: Path) -> dict[str, bytes]:
    """The raw answers a bundle would hold, keyed as ReadContext records them."""
    import socket

    raw: dict[str, bytes] = {}
    link_request = network_conf._IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    neigh_request = network_conf._NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    raw[f"netlink/0-{network_conf.RTM_GETLINK}-{link_request.hex()}"] = (directory / "rtm_getlink.bin").read_bytes()
    raw[f"netlink/0-{network_conf.RTM_GETNEIGH}-{neigh_request.hex()}"] = (directory / "rtm_getneigh.bin").read_bytes()
    proc = directory / "proc"
    for path in proc.rglob("*"):
        if path.is_file():
            raw["proc/" + str(path.relative_to(proc))] = path.read_bytes()
    conf = proc / "sys" / "net" / "ipv4" / "conf"
    raw["listdir/proc/sys/net/ipv4/conf"] = "\n".join(sorted(p.name for p in conf.iterdir())).encode()
    return raw


# --- /proc/net/route ----------------------------------------------------------------------

def test_route_host_default_and_connected():
    routes = network_conf.parse_route(text(HOST / "proc/net/route"))
    assert [(r.destination, r.gateway, r.interface) for r in routes] == [
        ("default", "192.0.2.1", "eth0"), ("192.0.2.0/24", None, "eth0")]
    assert routes[0].describe() == "default via 192.0.2.1 dev eth0"


def test_route_lab_gateway_and_unreachable():
    routes = network_conf.parse_route(text(LAB / "proc/net/route"))
    by_destination = {r.destination: r for r in routes}
    assert by_destination["198.18.8.0/24"].gateway == "198.18.0.1"
    assert by_destination["198.18.0.4/30"].gateway is None
    unreachable = by_destination["198.18.9.0/24"]
    assert unreachable.reject and unreachable.interface == "*"
    assert unreachable.describe() == "unreachable 198.18.9.0/24 dev *"
    assert not any(r.destination == "default" for r in routes)


@pytest.mark.parametrize("name, message", [
    ("route_bad_mask", "not a contiguous netmask"),
    ("route_short_line", "fields for 11 columns"),
    ("route_no_header", "header lacks"),
    ("route_bad_address", "not an 8-digit hex address"),
])
def test_route_broken(name, message):
    with pytest.raises(ParseError, match=message):
        network_conf.parse_route(text(FIXTURES / "broken" / name))


def test_route_empty_file_is_an_error_but_header_only_is_no_routes():
    with pytest.raises(ParseError):
        network_conf.parse_route("")
    header = text(LAB / "proc/net/route").splitlines()[0]
    assert network_conf.parse_route(header + "\n") == []

# --- /proc/net/ipv6_route -----------------------------------------------------------------

def test_ipv6_route_host_skips_local_and_null_entries():
    routes = network_conf.parse_ipv6_route(text(HOST / "proc/net/ipv6_route"))
    assert all(r.family == 6 for r in routes)
    assert [(r.destination, r.gateway) for r in routes if r.destination == "default"] == [("default", "fd00::1")]
    assert "::1/128" not in {r.destination for r in routes}  # local table
    assert not any(r.interface == "lo" and r.reject for r in routes)  # the kernel's null entry


def test_ipv6_route_lab():
    routes = network_conf.parse_ipv6_route(text(LAB / "proc/net/ipv6_route"))
    assert ("2001:db8:1::/64", "ddcap0") in {(r.destination, r.interface) for r in routes}
    assert network_conf.NetworkConf(routes=routes).has_default_route(6) is False


@pytest.mark.parametrize("name, message", [
    ("ipv6_route_short", "expected 10"),
    ("ipv6_route_bad_hex", "not hex"),
    ("ipv6_route_bad_prefix", "prefix length 144"),
])
def test_ipv6_route_broken(name, message):
    with pytest.raises(ParseError, match=message):
        network_conf.parse_ipv6_route(text(FIXTURES / "broken" / name))

# --- rtnetlink ----------------------------------------------------------------------------

def test_links_lab_mtus():
    links = network_conf.parse_links((LAB / "rtm_getlink.bin").read_bytes())
    assert {name: mtu for name, mtu in links.values()} == {"lo": 65536, "ddcap0": 1500, "ddcap1p": 1500,
                                                           "ddcap1": 1280}
    assert links[1] == ("lo", 65536)


def test_neighbours_lab_states():
    names = {index: name for index, (name, _) in network_conf.parse_links((LAB / "rtm_getlink.bin").read_bytes()).items()}
    entries = network_conf.parse_neighbours((LAB / "rtm_getneigh.bin").read_bytes(), names)
    v4 = {(n.address, n.interface, n.state) for n in entries if n.family == 4}
    assert v4 == {("198.18.0.1", "ddcap0", "REACHABLE"), ("198.18.0.6", "ddcap0", "FAILED"),
                  ("198.18.0.5", "ddcap0", "INCOMPLETE")}
    assert next(n for n in entries if n.address == "198.18.0.5").lladdr is None
    assert next(n for n in entries if n.address == "198.18.0.1").lladdr.count(":") == 5
    assert {n.state for n in entries if n.family == 6} == {"NOARP"}


def test_neighbours_without_link_names_use_the_index():
    entries = network_conf.parse_neighbours((HOST / "rtm_getneigh.bin").read_bytes())
    failed = [n for n in entries if n.state == "FAILED"]
    assert [(n.address, n.interface) for n in failed] == [("fd00::1", "ifindex 4")]


def test_truncated_netlink_is_a_parse_error():
    data = (LAB / "rtm_getneigh.bin").read_bytes()
    with pytest.raises(ParseError):
        network_conf.parse_neighbours(data[:37])
    with pytest.raises(ParseError):
        network_conf.parse_links((LAB / "rtm_getlink.bin").read_bytes()[:100])

# --- read() -------------------------------------------------------------------------------

def test_read_replayed_lab_namespace():
    conf = network_conf.read(ReadContext(root="/nonexistent", netns="rtr", live=False, replay=replay(LAB)))
    assert conf.gaps == {}
    assert conf.rp_filter_all == 2 and conf.rp_filter_default == 0
    ddcap0 = conf.interfaces["ddcap0"]
    assert (ddcap0.index, ddcap0.mtu, ddcap0.rp_filter, ddcap0.unres_qlen_bytes) == (2, 1500, 1, 2048)
    assert conf.interfaces["ddcap1"].mtu == 1280
    # the kernel uses max(all, interface): all=2 makes ddcap0's strict 1 loose
    assert conf.effective_rp_filter("ddcap0") == 2 and conf.effective_rp_filter("ddcap1") == 2
    assert conf.effective_rp_filter("missing") == 2
    assert conf.has_default_route(4) is False
    assert {n.address for n in conf.neighbours if n.state in network_conf.UNRESOLVED_STATES} == {
        "198.18.0.5", "198.18.0.6"}


def test_read_copied_tree_without_netlink_keeps_the_rest():
    conf = network_conf.read(ReadContext(root=str(HOST), live=False, sysfs_is_local=False))
    assert set(conf.interfaces) == {"eth0", "ifb0", "ifb1", "lo"}
    assert conf.interfaces["eth0"].rp_filter == 0 and conf.interfaces["eth0"].mtu is None
    assert conf.has_default_route(4) is True and conf.has_default_route(6) is True
    assert conf.neighbours is None
    assert set(conf.gaps) == {"mtu", "neighbours"}


def test_read_broken_route_file_is_a_gap(tmp_path):
    proc = tmp_path / "proc" / "net"
    proc.mkdir(parents=True)
    (proc / "route").write_bytes((FIXTURES / "broken" / "route_bad_mask").read_bytes())
    (proc / "ipv6_route").write_bytes((LAB / "proc/net/ipv6_route").read_bytes())
    # nothing else readable: the broken file makes the source fail, not vanish
    result = read_source(SOURCES["network_conf"], ReadContext(root=str(tmp_path), live=False))
    assert result.status == "failed" and "netmask" in result.error
    conf_dir = tmp_path / "proc" / "sys" / "net" / "ipv4" / "conf" / "eth0"
    conf_dir.mkdir(parents=True)
    (conf_dir / "rp_filter").write_text("1\n")
    conf = network_conf.read(ReadContext(root=str(tmp_path), live=False))
    assert conf.routes is None and "netmask" in conf.gaps["route"]
    assert conf.has_default_route(4) is None
    assert conf.interfaces["eth0"].rp_filter == 1


def test_read_nothing_is_unavailable(tmp_path):
    result = read_source(SOURCES["network_conf"], ReadContext(root=str(tmp_path), live=False))
    assert result.status == "unavailable"


def test_source_is_final_only_without_counters():
    source = SOURCES["network_conf"]
    assert source.final_only and source.counters is None
