"""The network layer: reverse-path filter, missing routes, TTL expiry (routing loops),
packets too big for the MTU, fragment reassembly, unresolved neighbours.

Counters say how many packets died; the namespace's own configuration (sources/
network_conf.py: interfaces with MTU and rp_filter, routes, neighbour entries) says
which interface, route or neighbour is behind them. Fixes are derived from those values
and the measured numbers.
"""

from __future__ import annotations

from typing import Any

from ...model import Finding
from ...sources.network_conf import UNRESOLVED_STATES, Interface, NetworkConf
from ...window import Window
from . import enricher
from .common import next_power_of_two, sysctl, sysctl_fix

RP_MODES = {0: "off", 1: "strict", 2: "loose"}
# A packet forwarded this many times per drop on one host went round in circles.
LOOP_FORWARDS_PER_DROP = 4.0
LOOP_MAX_FORWARDS_PER_DROP = 130.0
KERNEL_IPFRAG_TIME = 30  # net.ipv4.ipfrag_time default
MAX_SUBJECTS = 5


def _delta(window: Window, name: str) -> int:
    value = window.deltas.values.get(name)
    return value or 0


def _conf(window: Window) -> NetworkConf | None:
    return window.after.data("network_conf")


def _physical(conf: NetworkConf) -> list[Interface]:
    return [i for name, i in sorted(conf.interfaces.items()) if name != "lo"]


def _moved(window: Window, *names: str) -> dict[str, int]:
    return {name: _delta(window, name) for name in names if _delta(window, name)}


def _explain(finding: Finding, parts: list[str]) -> None:
    """Set the explanation; a benign finding keeps its reason first (rendered as 'benign: ...')."""
    text = "; ".join(p for p in parts if p)
    if finding.benign and finding.explanation:
        text = f"{finding.explanation}. Here: {text}" if text else finding.explanation
    finding.explanation = text or None


def _gap_note(conf: NetworkConf | None, part: str) -> str:
    if conf is None:
        return "the namespace's interface/route configuration could not be read"
    return conf.gaps.get(part, "")

# --- ip.rp_filter -------------------------------------------------------------------------

@enricher("rp_filter")
def rp_filter(finding: Finding, window: Window) -> None:
    conf = _conf(window)
    if conf is None:
        finding.explanation = _gap_note(conf, "conf") + "; see `sysctl -a | grep rp_filter`"
        return
    candidates = []
    for iface in _physical(conf):
        effective = conf.effective_rp_filter(iface.name)
        if effective in (1, 2):
            candidates.append((iface, effective, _delta(window, f"link.{iface.name}.rx_packets")))
    # Interfaces that filter and received traffic during the window come first.
    receiving = [c for c in candidates if c[2] > 0]
    named = receiving or candidates
    for iface, effective, rx in sorted(named, key=lambda c: -c[2])[:MAX_SUBJECTS]:
        subject = {"interface": iface.name, "rp_filter": iface.rp_filter, "all": conf.rp_filter_all,
                   "effective": effective, "mode": RP_MODES[effective], "rx_packets": rx}
        if len(named) > 1 and not receiving:
            subject["suspected"] = True
        finding.subjects.append(subject)
    finding.evidence.append({"source": "network_conf", "rp_filter_all": conf.rp_filter_all,
                             "rp_filter_default": conf.rp_filter_default,
                             "filtering": (", ".join(f"{i.name}={RP_MODES[e]}" for i, e, _ in candidates[:10])
                                           + (f" and {len(candidates) - 10} more" if len(candidates) > 10 else ""))
                             or "none"})
    if not candidates:
        finding.explanation = ("no interface filters now (rp_filter is 0 everywhere): it was probably "
                               "switched off during the window, or the drops come from an interface that is gone")
        return
    strict = [s for s in finding.subjects if s["effective"] == 1]
    loose = [s for s in finding.subjects if s["effective"] == 2]
    if strict:
        finding.explanation = (
            f"strict reverse-path filtering on {', '.join(s['interface'] for s in strict)}: a packet is "
            "dropped when the route back to its source leaves through another interface (asymmetric "
            "routing: multi-homed hosts, policy routing, a VIP or tunnel answering elsewhere)")
    else:
        finding.explanation = (
            f"loose reverse-path filtering on {', '.join(s['interface'] for s in loose)}: a packet is "
            "dropped only when there is no route back to its source at all")
    finding.fixes.extend(_rp_fixes(finding, window, conf, strict, loose))


def _rp_fixes(finding: Finding, window: Window, conf: NetworkConf, strict: list[dict[str, Any]],
              loose: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fixes: list[dict[str, Any]] = []
    if strict:
        # The kernel uses max(all, interface): lowering one side alone does not help.
        if conf.rp_filter_all == 1:
            fixes.append(sysctl_fix(window, "net.ipv4.conf.all.rp_filter", 1, 2,
                                    "loose mode: still drops sources with no route back at all "
                                    "(spoofing protection), accepts asymmetric routing"))
        for subject in strict:
            if subject["rp_filter"] == 1:
                fixes.append(sysctl_fix(window, f"net.ipv4.conf.{subject['interface']}.rp_filter", 1, 2,
                                        f"loose mode on {subject['interface']} only"))
        names = ", ".join(s["interface"] for s in strict)
        fixes.append({"kind": "config", "text": (
            f"or fix the routing instead: make the route back to the senders leave through {names} "
            "(`ip route get <sender> from <local address> iif <interface>` shows the decision; add a "
            "route or an `ip rule` so replies use the interface the requests came in on)")})
    if loose and not strict:
        missing_default = conf.has_default_route(4) is False
        fixes.append({"kind": "config", "text": (
            "add a route covering the senders' source addresses" +
            (" (this namespace has no IPv4 default route)" if missing_default else "") +
            ", or set rp_filter=0 on the interface if it must accept unroutable sources")})
    fixes.append({"kind": "command", "text": (
        "to see the dropped sources: `sysctl -w net.ipv4.conf.all.log_martians=1` and read "
        "`dmesg | grep 'martian source'` (each line names source, destination and interface); "
        "set it back to 0 afterwards")})
    return fixes

# --- ip.no_route --------------------------------------------------------------------------

@enricher("no_route")
def no_route(finding: Finding, window: Window) -> None:
    conf = _conf(window)
    incoming = _moved(window, "IpExt.InNoRoutes", "Ip6.InNoRoutes")
    outgoing = _moved(window, "Ip.OutNoRoutes", "Ip6.OutNoRoutes")
    families = {6 if "6" in name.split(".")[0] else 4 for name in {**incoming, **outgoing}}
    if conf is not None and conf.routes is not None:
        for family in sorted(families):
            routes = [r for r in conf.routes if r.family == family]
            finding.subjects.append({
                "routing_table": f"IPv{family} main", "routes": len(routes),
                "default_route": conf.has_default_route(family),
                "forwarding": sysctl(window, "net.ipv4.ip_forward" if family == 4 else "net.ipv6.conf.all.forwarding"),
            })
    parts = []
    if incoming:
        parts.append(f"{sum(incoming.values())} received packets had to be forwarded but no route matched their "
                     "destination (this host sent ICMP net unreachable back, rate-limited)")
    if outgoing:
        parts.append(f"{sum(outgoing.values())} locally generated packets had no route: the applications "
                     "got ENETUNREACH from connect()/sendto()")
    no_default = [s for s in finding.subjects if s["default_route"] is False]
    if no_default:
        parts.append(" and ".join(s["routing_table"] for s in no_default) + " table has no default route, so "
                     "every destination outside the routes listed by `ip route` is unreachable")
    _explain(finding, parts)
    if incoming:
        finding.fixes.append({"kind": "command", "text": (
            "find the destinations: `tcpdump -ni any -v 'icmp[icmptype]==3 and icmp[icmpcode]==0'` shows "
            "the ICMP net-unreachable this host sends, each quoting the dropped packet's destination "
            "(IPv6: 'icmp6 and ip6[40]==1'); `dropdoc trace` counts reason IP_INNOROUTES")})
    if outgoing:
        finding.fixes.append({"kind": "command", "text": (
            "find the destinations: `ip route get <destination>` answers 'Network is unreachable' for "
            "them; the applications log ENETUNREACH (strace -e connect,sendto -p <pid>)")})
    finding.fixes.append({"kind": "config", "text": (
        "add the missing route (`ip route add <prefix> via <gateway>`)" +
        (" or a default route" if no_default else "") +
        "; check `ip rule` if policy routing sends these packets to another table")})

# --- ip.ttl_exceeded ----------------------------------------------------------------------

@enricher("ttl_exceeded")
def ttl_exceeded(finding: Finding, window: Window) -> None:
    drops4 = _delta(window, "Ip.InHdrErrors")
    drops6 = _delta(window, "Ip6.InHdrErrors")
    forwarded = _delta(window, "Ip.ForwDatagrams") + _delta(window, "Ip6.OutForwDatagrams")
    time_exceeded = (_delta(window, "Icmp.OutTimeExcds") + _delta(window, "Icmp6.OutTimeExcds")
                     - _delta(window, "Ip.ReasmTimeout"))  # those are reassembly time-outs
    rate_limited = _delta(window, "Icmp.OutRateLimitHost") + _delta(window, "Icmp.OutRateLimitGlobal")
    drops = drops4 + drops6
    per_drop = forwarded / drops if drops else 0.0
    ttl_seen = time_exceeded > 0 or rate_limited > 0
    # In a loop between N hops each of them forwards a packet about TTL/N times before it
    # expires (at most ~128 for TTL 255 and two hops). Far more forwards per drop is
    # ordinary transit traffic next to a few expiring probes.
    loop = ttl_seen and LOOP_FORWARDS_PER_DROP <= per_drop <= LOOP_MAX_FORWARDS_PER_DROP
    if loop and finding.benign:
        finding.explanation += (f". This host forwarded {per_drop:.0f} packets per expired one: if the rate "
                                "grows, check for a routing loop (`traceroute -n` to the destinations)")
    elif loop:
        # Every packet to the prefix is lost and each crosses the link ~per_drop times.
        finding.severity = "critical"
        subject: dict[str, Any] = {"routing_loop": True, "forwarded_per_drop": round(per_drop, 1),
                                   "forwarded": forwarded, "dropped": drops}
        redirects = _delta(window, "Icmp.OutRedirects")
        if redirects:
            subject["icmp_redirects_sent"] = redirects
        finding.subjects.append(subject)
        conf = _conf(window)
        gateways = [r for r in (conf.routes or []) if r.gateway] if conf else []
        for route in sorted(gateways, key=lambda r: r.destination == "default")[:MAX_SUBJECTS]:
            finding.subjects.append({"route": route.describe(), "next_hop": route.gateway, "suspected": True})
        finding.explanation = (
            f"routing loop: this host forwarded {forwarded} packets for {drops} that expired, about "
            f"{per_drop:.0f} times each - the same packets came back until their TTL ran out"
            + (" (it also sent ICMP redirects: packets left through the interface they came in on)"
               if redirects else ""))
        hops = ", ".join(s["next_hop"] for s in finding.subjects if "next_hop" in s) or "the next hop"
        finding.fixes.append({"kind": "command", "text": (
            f"find the loop: `ip route get <destination>` here and on {hops} - each points to the other; "
            "`traceroute -n <destination>` shows the same two hops repeating")})
        finding.fixes.append({"kind": "config", "text": (
            "give the hop that should deliver the prefix a specific route (or an "
            "`ip route add unreachable <prefix>` to answer instead of looping); raising the TTL does not help")})
    elif not ttl_seen:
        finding.benign = False  # not traceroute: no TTL expired; severity stays the rate's ("info" when low)
        finding.explanation = (
            "no ICMP time-exceeded was sent or rate-limited: these are malformed IP headers (bad version, "
            "header length or total length), not expired TTLs - a broken sender, NIC or driver corrupting packets")
        finding.fixes.append({"kind": "command", "text": (
            "capture a few: `tcpdump -ni any -c 20 'ip[0] & 0xf0 != 0x40 or ip[0] & 0x0f < 5'`; compare "
            "`ethtool -S <dev>` error counters and update the NIC driver/firmware")})
    elif not finding.benign:
        finding.explanation = (
            f"{drops} packets arrived with a TTL too small to forward ({forwarded} forwarded in the window, "
            f"{per_drop:.1f} per drop: no loop through this host); the senders start with a low TTL or the "
            "path is longer than their TTL")
        finding.fixes.append({"kind": "config", "text": (
            "find the senders: `tcpdump -ni any 'ip[8] <= 1'`; a loop between two other hops also shows here "
            "as packets arriving with TTL 1")})

# --- ip.frag_needed -----------------------------------------------------------------------

@enricher("frag_needed")
def frag_needed(finding: Finding, window: Window) -> None:
    conf = _conf(window)
    mtus = {i.name: i.mtu for i in _physical(conf)} if conf else {}
    known = {name: mtu for name, mtu in mtus.items() if mtu}
    smallest = min(known.values()) if known else None
    largest = max(known.values()) if known else None
    if known and smallest != largest:
        for name, mtu in sorted(known.items(), key=lambda item: item[1])[:MAX_SUBJECTS]:
            if mtu < largest:
                finding.subjects.append({"interface": name, "mtu": mtu, "largest_mtu": largest})
    elif known:
        finding.subjects.append({"interfaces": ", ".join(sorted(known)), "mtu": smallest})
    icmp_sent = _delta(window, "Icmp.OutDestUnreachs") + _delta(window, "Icmp6.OutPktTooBigs")
    forwarded = _delta(window, "Ip.ForwDatagrams") + _delta(window, "Ip6.OutForwDatagrams")
    why = []
    if forwarded:
        why.append(f"packets forwarded by this host ({forwarded} in the window) did not fit the outgoing link")
    else:
        why.append("locally sent packets with don't-fragment set did not fit the outgoing MTU")
    if smallest and largest and smallest < largest:
        why.append(f"the smallest MTU here is {smallest} ({', '.join(s['interface'] for s in finding.subjects)}) "
                   f"against {largest} elsewhere")
    if icmp_sent and not finding.benign:
        why.append(f"this host sent {icmp_sent} ICMP 'fragmentation needed'/'packet too big' replies: senders that "
                   "keep sending large packets do not get them (an ICMP-filtering firewall on the way back: "
                   "a PMTU black hole) or ignore them")
    _explain(finding, why)
    if smallest:
        mss4, mss6 = smallest - 40, smallest - 60
        finding.fixes.append({"kind": "config", "text": (
            f"TCP: clamp the MSS to the path MTU on this host - nft: `tcp flags syn tcp option maxseg size set "
            f"rt mtu` in the forward chain (iptables: -j TCPMSS --clamp-mss-to-pmtu), i.e. MSS {mss4} "
            f"(IPv6 {mss6}) for MTU {smallest}")})
        finding.fixes.append({"kind": "app", "text": (
            f"UDP and other datagrams: send at most {smallest - 28} bytes of payload (IPv6 {smallest - 48}) "
            "or let them be fragmented (no IP_PMTUDISC_DO)")})
        if largest and smallest < largest:
            finding.fixes.append({"kind": "config", "text": (
                f"or raise the MTU of {', '.join(s['interface'] for s in finding.subjects)} to {largest} if the "
                f"link and the peer support it (`ip link set dev <if> mtu {largest}`, on both ends)")})
    finding.fixes.append({"kind": "config", "text": (
        "let ICMP 'fragmentation needed' (type 3 code 4) and ICMPv6 'packet too big' through every firewall "
        "back to the senders, so path MTU discovery works")})

# --- ip.reassembly_timeout ----------------------------------------------------------------

@enricher("reassembly")
def reassembly(finding: Finding, window: Window) -> None:
    fails = finding.drops
    timeouts = _delta(window, "Ip.ReasmTimeout") + _delta(window, "Ip6.ReasmTimeout")
    completed = _delta(window, "Ip.ReasmOKs") + _delta(window, "Ip6.ReasmOKs")
    fragments = _delta(window, "Ip.ReasmReqds") + _delta(window, "Ip6.ReasmReqds")
    overlaps = _delta(window, "IpExt.ReasmOverlaps")
    share = fails / (fails + completed) if fails + completed else 1.0
    finding.subjects.append({"datagrams_failed": fails, "timed_out": timeouts, "reassembled": completed,
                             "fragments_received": fragments, "failed_share": round(share, 3)})
    ipfrag_time = sysctl(window, "net.ipv4.ipfrag_time")
    high = sysctl(window, "net.ipv4.ipfrag_high_thresh")
    other = fails - timeouts
    why = []
    if timeouts:
        why.append(
            f"{timeouts} datagrams timed out: some of their fragments arrived, the rest never did within "
            f"ipfrag_time ({ipfrag_time} s) - fragments are lost or filtered on the way (firewalls and "
            "security groups drop non-first fragments, which carry no ports; ECMP/LAG paths; a lossy link)")
    if other > 0:
        why.append(f"{other} failed without a timeout: reassembly memory (ipfrag_high_thresh "
                   f"{high} bytes) was full, or fragments were malformed/overlapping"
                   + (f" ({overlaps} overlaps)" if overlaps else ""))
    why.append(f"{share:.0%} of the fragmented datagrams in the window were lost")
    finding.explanation = "; ".join(why)
    finding.fixes.append({"kind": "app", "text": (
        "avoid fragmentation: have the senders keep datagrams under the path MTU (e.g. DNS: EDNS buffer "
        "size 1232; tunnels: lower the inner MTU; UDP apps: smaller payloads, or TCP)")})
    if timeouts and isinstance(ipfrag_time, int) and ipfrag_time < KERNEL_IPFRAG_TIME:
        finding.fixes.append(sysctl_fix(window, "net.ipv4.ipfrag_time", ipfrag_time, KERNEL_IPFRAG_TIME,
                                        "back to the kernel default: fragments that arrive late (reordering, "
                                        "slow links) then still complete; it does not bring back lost ones"))
    elif timeouts:
        finding.fixes.append({"kind": "config", "text": (
            f"a longer ipfrag_time than {ipfrag_time} s will not help: the missing fragments do not arrive late, "
            "they never arrive - find where they are dropped (`tcpdump -ni <if> 'ip[6:2] & 0x1fff != 0'` on "
            "each hop shows non-first fragments)")})
    if other > 0 and isinstance(high, int):
        proposed = next_power_of_two(2 * high)
        finding.fixes.append(sysctl_fix(window, "net.ipv4.ipfrag_high_thresh", high, proposed,
                                        "more memory for fragments being reassembled; raise ipfrag_low_thresh "
                                        "with it (to 3/4 of the new value)"))

# --- neigh.unresolved ---------------------------------------------------------------------

FAMILY_OF_TABLE = {"arp": 4, "ndisc": 6}


@enricher("neighbours")
def neighbours(finding: Finding, window: Window) -> None:
    stats = window.after.data("neighbour")
    conf = _conf(window)
    moved_tables = sorted({name.split(".")[1] for name in window.deltas.values
                           if name.startswith("neigh.") and name.rsplit(".", 1)[1] in ("unresolved_discards", "table_fulls")
                           and _delta(window, name)})
    for table in moved_tables:
        item: dict[str, Any] = {"source": "neighbour", "table": table, "scope": "host-wide (all network namespaces)",
                                "unresolved_discards": _delta(window, f"neigh.{table}.unresolved_discards"),
                                "table_fulls": _delta(window, f"neigh.{table}.table_fulls")}
        if stats is not None and table in stats.tables:
            item["entries_now"] = stats.tables[table].entries
        finding.evidence.append(item)
    unresolved = []
    if conf is not None and conf.neighbours is not None:
        families = {FAMILY_OF_TABLE[t] for t in moved_tables if t in FAMILY_OF_TABLE}
        unresolved = [n for n in conf.neighbours if n.state in UNRESOLVED_STATES and n.family in families]
    for entry in unresolved[:MAX_SUBJECTS]:
        qlen = conf.interfaces.get(entry.interface).unres_qlen_bytes if entry.interface in conf.interfaces else None
        finding.subjects.append({"neighbour": entry.address, "interface": entry.interface, "state": entry.state,
                                 "unres_qlen_bytes": qlen})
    where = f"namespace {window.after.netns}" if window.after.netns else "the host namespace"
    caveat = ("the neighbour-table counters are host-wide: they count every network namespace, "
              "not only " + where)
    discards = sum(_delta(window, f"neigh.{t}.unresolved_discards") for t in moved_tables)
    fulls = sum(_delta(window, f"neigh.{t}.table_fulls") for t in moved_tables)
    if conf is not None and conf.neighbours is not None and not unresolved and not fulls:
        # Nothing unresolved here: the discards happened in another namespace.
        finding.severity, finding.benign = "info", False
        finding.explanation = (
            f"{caveat}; {where} has no INCOMPLETE or FAILED neighbour entry, so these drops happened "
            "elsewhere on the host (another namespace or container): diagnose that namespace")
        return
    parts = [caveat]
    if unresolved:
        names = ", ".join(f"{s['neighbour']} on {s['interface']} ({s['state']})" for s in finding.subjects)
        parts.append(f"unresolved neighbours in {where}: {names}; packets to them waited in the per-neighbour "
                     "queue (unres_qlen_bytes) and the overflow was discarded")
    elif conf is None or conf.neighbours is None:
        parts.append("the namespace's neighbour entries could not be read, so the drops cannot be attributed")
    if fulls:
        parts.append(f"{fulls} times the neighbour table was full (gc_thresh3) and a new neighbour could not be created")
    finding.explanation = "; ".join(parts)
    finding.fixes.extend(_neigh_fixes(finding, window, stats, discards, fulls))


def _neigh_fixes(finding: Finding, window: Window, stats: Any, discards: int, fulls: int) -> list[dict[str, Any]]:
    fixes: list[dict[str, Any]] = []
    failed = [s for s in finding.subjects if s["state"] == "FAILED"]
    if finding.subjects:
        target = finding.subjects[0]
        probe = (f"ndisc6 {target['neighbour']} {target['interface']}" if ":" in target["neighbour"]
                 else f"arping -I {target['interface']} {target['neighbour']}")
        fixes.append({"kind": "command", "text": (
            f"check the neighbour: `{probe}` and `ip neigh show nud failed`; a host that is down, a wrong "
            "next hop in a route, or a subnet scanned for unused addresses")})
    if discards:
        for subject in finding.subjects:
            qlen = subject.get("unres_qlen_bytes")
            if not isinstance(qlen, int) or subject["interface"].startswith("ifindex "):
                continue
            proposed = next_power_of_two(max(2 * qlen, 65536))
            note = ("the queue holds packets only while resolution is pending: this helps bursts to neighbours "
                    "that do answer")
            if subject["state"] == "FAILED":
                note += f"; {subject['neighbour']} never answered, so its packets are lost either way"
            fixes.append(sysctl_fix(window, f"net.ipv4.neigh.{subject['interface']}.unres_qlen_bytes"
                                    if ":" not in subject["neighbour"]
                                    else f"net.ipv6.neigh.{subject['interface']}.unres_qlen_bytes",
                                    qlen, proposed, note))
            break  # one device is enough to show the change
    if failed:
        fixes.append({"kind": "config", "text": (
            f"if {', '.join(s['neighbour'] for s in failed)} is gone for good, remove or correct the route or "
            "configuration that still sends traffic to it")})
    if fulls:
        entries = max((t.entries for t in stats.tables.values()), default=0) if stats else 0
        for family in ("ipv4", "ipv6"):
            table = "arp" if family == "ipv4" else "ndisc"
            if not _delta(window, f"neigh.{table}.table_fulls"):
                continue
            current = sysctl(window, f"net.{family}.neigh.default.gc_thresh3")
            base = current if isinstance(current, int) else max(entries, 1024)
            proposed3 = next_power_of_two(max(2 * base, 2 * entries))
            for n, value in ((1, proposed3 // 8), (2, proposed3 // 2), (3, proposed3)):
                key = f"net.{family}.neigh.default.gc_thresh{n}"
                now = sysctl(window, key)
                if isinstance(now, int) and now >= value:
                    continue
                note = (f"{entries} entries in the table now; host-wide: run it in the initial namespace"
                        if n == 3 else "keep the thresholds in the kernel's 1/8 : 1/2 : 1 proportion")
                fixes.append(sysctl_fix(window, key, now, value, note))
    return fixes
