"""Why a proposed value: the measured numbers of the finding that lead to it.

The enrichers derive proposals from the window; these functions say in one sentence which
numbers (accept-queue peak, backlog in force, drops and rate, per-socket drops, per-CPU
drops) the value comes from, using only the finding as the JSON contract carries it, so a
plan made from `--from diagnosis.json` reads the same as one made live. A fix record that
brings its own `why` keeps it.
"""

from __future__ import annotations

from typing import Any, Callable

from ..sources.sysctls import Value


def _pow2(value: int) -> int:
    return 1 << max(int(value) - 1, 0).bit_length()


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def _rate(finding: dict[str, Any]) -> str:
    return f"{float(finding.get('rate_per_s') or 0):.1f}/s"


def _drops(finding: dict[str, Any], seconds: float | None) -> str:
    span = f" in {seconds:.1f} s" if seconds else ""
    return f"{finding.get('drops', 0)} drops{span} ({_rate(finding)})"


def growth(current: Any, proposed: Any) -> str:
    """How proposed relates to current, in words."""
    if not isinstance(current, int) or not isinstance(proposed, int) or current <= 0:
        return f"{_fmt(current)} -> {_fmt(proposed)}"
    if proposed == 2 * current:
        return "twice the current value"
    if proposed > current and proposed % current == 0:
        return f"{proposed // current}x the current value"
    return f"{proposed / current:.1f}x the current value"


def counter(finding: dict[str, Any], name: str) -> int | None:
    for item in finding.get("evidence", []):
        if item.get("counter") == name:
            return item.get("delta")
    return None


def _sustained(finding: dict[str, Any]) -> str:
    text = finding.get("explanation") or ""
    if "sustained" in text:
        return (" Warning: the queue stayed full for the whole window (sustained overload): a bigger "
                "queue only delays these drops, so verification may well roll it back.")
    return ""


def _listen_somaxconn(finding: dict[str, Any], current: Any, proposed: Any, seconds: float | None) -> str:
    subjects = [s for s in finding.get("subjects", []) if s.get("backlog") is not None]
    drops = int(finding.get("drops") or 0)
    if not subjects:
        return (f"{_drops(finding, seconds)} from full accept queues with somaxconn {_fmt(current)}; "
                f"{_fmt(proposed)} is {growth(current, proposed)}." + _sustained(finding))
    worst = max(subjects, key=lambda s: (s.get("full_samples") or 0, s.get("accept_queue") or 0))
    backlog = max(s["backlog"] for s in subjects)
    owner = f" (pid {worst['pid']}, {worst.get('process')})" if worst.get("pid") is not None else ""
    seen = ""
    if worst.get("samples"):
        seen = f", full in {worst.get('full_samples', 0)}/{worst['samples']} samples"
    span = f" in {seconds:.1f} s" if seconds else ""
    parts = [f"the accept queue of {worst.get('socket')}{owner} peaked at {worst.get('accept_queue')} "
             f"with a backlog of {worst['backlog']} in force{seen}; {drops} connection attempts were dropped"
             f"{span} ({_rate(finding)})"]
    if isinstance(proposed, int):
        if proposed == 65535:
            parts.append("65535 is the largest somaxconn every kernel honours")
        elif proposed == _pow2(backlog + drops) and backlog + drops >= 2 * backlog:
            parts.append(f"{proposed} holds the backlog plus every dropped attempt "
                         f"({backlog} + {drops} = {backlog + drops}, rounded up to a power of two)")
        elif proposed == _pow2(2 * backlog):
            parts.append(f"{proposed} is at least twice the backlog in force ({backlog})")
        else:
            parts.append(f"{proposed} is {growth(current, proposed)}")
    return "; ".join(parts) + "." + _sustained(finding)


def _syn_backlog(finding: dict[str, Any], current: Any, proposed: Any, seconds: float | None) -> str:
    drops = int(finding.get("drops") or 0)
    text = f"{_drops(finding, seconds)} with tcp_max_syn_backlog {_fmt(current)}"
    if isinstance(current, int) and proposed == _pow2(max(2 * current, current + drops)):
        basis = current + drops if current + drops >= 2 * current else 2 * current
        text += f"; {proposed} is the next power of two above {basis} (current + drops, at least doubled)"
    else:
        text += f"; {_fmt(proposed)} is {growth(current, proposed)}"
    return text + ". On current kernels the listen backlog in force caps the SYN queue too."


def _syncookies(finding: dict[str, Any], current: Any, proposed: Any, seconds: float | None) -> str:
    return (f"SYN cookies are {_fmt(current)} (off) and {_drops(finding, seconds)} were SYNs dropped on a full "
            f"SYN queue; with {_fmt(proposed)} the listener answers those with a cookie instead.")


def _udp_buffer(finding: dict[str, Any], current: Any, proposed: Any, seconds: float | None) -> str:
    sockets = [s for s in finding.get("subjects", []) if "drops" in s]
    where = ""
    if sockets:
        top = max(sockets, key=lambda s: s.get("drops") or 0)
        owner = f" (pid {top['pid']}, {top.get('process')})" if top.get("pid") is not None else ""
        where = (f"; {top.get('socket')}{owner} alone dropped {top.get('drops')} with {top.get('rx_queue')} "
                 "bytes queued")
    return (f"{_drops(finding, seconds)} on full UDP receive buffers{where}; "
            f"{_fmt(proposed)} is {growth(current, proposed)}, so each socket holds twice the datagrams "
            "before it drops.")


def _netdev_backlog(finding: dict[str, Any], current: Any, proposed: Any, seconds: float | None) -> str:
    cpus = [s for s in finding.get("subjects", []) if "cpu" in s]
    where = ""
    if cpus:
        top = max(cpus, key=lambda s: s.get("drops") or 0)
        where = f", {top.get('drops')} of them on CPU {top['cpu']}"
    return (f"{_drops(finding, seconds)} from full per-CPU backlogs{where} with netdev_max_backlog "
            f"{_fmt(current)}; {_fmt(proposed)} is {growth(current, proposed)}.")


EXPLAINERS: dict[str, Callable[[dict[str, Any], Any, Any, float | None], str]] = {
    "net.core.somaxconn": _listen_somaxconn,
    "net.ipv4.tcp_max_syn_backlog": _syn_backlog,
    "net.ipv4.tcp_syncookies": _syncookies,
    "net.core.rmem_default": _udp_buffer,
    "net.core.rmem_max": _udp_buffer,
    "net.core.netdev_max_backlog": _netdev_backlog,
}


def _queue(finding: dict[str, Any], fields: dict[str, Any], current: Any, proposed: Any,
           seconds: float | None) -> str:
    """qdisc limit / txqueuelen: the dropping qdisc of the finding's subjects."""
    interface = fields.get("interface")
    subjects = [s for s in finding.get("subjects", []) if s.get("interface") == interface
                and (not fields.get("handle") or s.get("handle") == fields["handle"])]
    subject = max(subjects, key=lambda s: s.get("drops") or 0) if subjects else {}
    drops = subject.get("drops") or finding.get("drops") or 0
    unit = subject.get("limit_unit") or "packets"
    what = (f"{subject.get('qdisc', 'the qdisc')} {subject.get('handle', '')} on {interface}").replace("  ", " ")
    sent = f" of {subject['sent_packets'] + drops} offered" if isinstance(subject.get("sent_packets"), int) else ""
    span = f" in {seconds:.1f} s" if seconds else ""
    text = (f"{what} holds {_fmt(current)} {unit} and dropped {drops} packets{sent}{span} "
            f"({_rate(finding)})")
    if unit == "packets" and isinstance(current, int) and isinstance(proposed, int) and \
            proposed == _pow2(current + drops) and current + drops >= 2 * current:
        return (text + f"; {proposed} holds the limit plus every dropped packet ({current} + {drops} = "
                f"{current + drops}, rounded up to a power of two): bursts of that size fit, at the cost of "
                "queueing delay.")
    return text + f"; {_fmt(proposed)} is {growth(current, proposed)}."


def explain(finding: dict[str, Any], target: str, current: Value | None, proposed: Any,
            seconds: float | None, given: str | None = None, kind: str = "sysctl",
            fields: dict[str, Any] | None = None) -> str:
    """One sentence: which measured numbers the proposed value comes from."""
    if isinstance(given, str) and given:
        return given
    if kind in ("qdisc_limit", "txqueuelen"):
        try:
            return _queue(finding, fields or {}, current, proposed, seconds)
        except (TypeError, ValueError, KeyError, AttributeError):
            pass
    explainer = EXPLAINERS.get(target) if kind == "sysctl" else None
    if explainer is not None and (finding.get("id") != "tcp.syn_queue_full" or target != "net.core.somaxconn"):
        try:
            return explainer(finding, current, proposed, seconds)
        except (TypeError, ValueError, KeyError, AttributeError):
            pass  # subjects not in the shape the enrichers write: say what is certain
    return (f"{finding.get('id')}: {_drops(finding, seconds)} measured with {target} = {_fmt(current)}; "
            f"{_fmt(proposed)} is {growth(current, proposed)}.")


def explain_ring(finding: dict[str, Any], interface: str, current: int, proposed: int, maximum: int,
                 seconds: float | None) -> str:
    subject = next((s for s in finding.get("subjects", []) if s.get("interface") == interface), {})
    missed = sum(v for k, v in subject.items() if k.startswith("rx_") and isinstance(v, int))
    return (f"{interface} missed {missed or finding.get('drops')} packets{f' in {seconds:.1f} s' if seconds else ''} "
            f"({_rate(finding)}) with an RX ring of {current} (hardware maximum {maximum}): the NIC ran out of "
            f"descriptors between polls; {proposed} is "
            + ("the maximum" if proposed == maximum else growth(current, proposed)) + ".")
