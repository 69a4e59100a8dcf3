"""Firewall rules that drop, and the connection-tracking table."""

from __future__ import annotations

from typing import Any

from ...model import Finding
from ...sources.conntrack import BUCKETS, COUNT, MAX, ConntrackStats
from ...sources.conntrack import TIMEOUTS as TIMEOUT_KEYS
from ...sources.nftables import NftChain, NftRule, Ruleset
from ...window import Window
from ..engine import Rule, matching, new_finding
from . import enricher, evaluator
from .common import next_power_of_two, sysctl, sysctl_fix

# --- netfilter.drop -----------------------------------------------------------------------

IPTABLES_NFT_TABLES = ("filter", "nat", "mangle", "raw", "security")
MAX_SUBJECTS = 10  # rules named per finding (largest drops first); the rest are summed


def _rule_evidence(name: str, delta: int, seconds: float, what: str) -> dict[str, Any]:
    return {"source": "nftables", "counter": name, "delta": delta,
            "rate_per_s": round(delta / seconds, 3), "rule": what}


def _managed_by_iptables(family: str, table: str, rule: NftRule | None = None) -> bool:
    xt = rule is not None and any(e in ("match", "target") for e in rule.expressions)
    return xt or (family in ("ip", "ip6") and table in IPTABLES_NFT_TABLES)


def _rule_fix(rule: NftRule, drops: int, rate: float) -> dict[str, Any]:
    where = f"table {rule.family} {rule.table} chain {rule.chain} handle {rule.handle}"
    text = (f"check that rule `{rule.matches or 'all packets'} {rule.verdict}` in {where}"
            f"{' (' + repr(rule.comment) + ')' if rule.comment else ''} is intended: it dropped {drops} "
            f"packets ({rate:.1f}/s). A firewall drop is a policy decision: if this traffic should pass, "
            f"change or remove the rule (`nft -a list chain {rule.family} {rule.table} {rule.chain}`, then "
            f"`nft delete rule {rule.family} {rule.table} {rule.chain} handle {rule.handle}` or insert an "
            f"accept rule before it)")
    if _managed_by_iptables(rule.family, rule.table, rule):
        tool = "ip6tables" if rule.family == "ip6" else "iptables"
        text += (f"; this table is managed by iptables-nft: change it with {tool} "
                 f"(`{tool} -t {rule.table} -L {rule.chain} -v -n --line-numbers`)")
    return {"kind": "config", "text": text}


def _policy_fix(chain: NftChain, drops: int, rate: float) -> dict[str, Any]:
    text = (f"{drops} packets ({rate:.1f}/s) matched no rule that accepts them in base chain "
            f"{chain.family} {chain.table} {chain.name} (hook {chain.hook}) and hit its `policy drop`: if "
            f"this traffic should pass, add an accept rule for it; otherwise the default-deny is doing its job")
    if _managed_by_iptables(chain.family, chain.table):
        tool = "ip6tables" if chain.family == "ip6" else "iptables"
        text += f" (`{tool} -t {chain.table} -L {chain.name} -v -n --line-numbers`)"
    return {"kind": "config", "text": text}


def _uncounted(ruleset: Ruleset) -> tuple[list[NftRule], list[NftChain]]:
    rules = [r for r in ruleset.rules if r.drops and r.packets is None]
    chains = [c for c in ruleset.chains if c.hook and c.policy == "drop" and c.packets is None]
    return rules, chains


def _blind_spots(ruleset: Ruleset) -> str | None:
    rules, chains = _uncounted(ruleset)
    parts = []
    if rules:
        parts.append(f"{len(rules)} dropping rule(s) without a `counter` (e.g. {rules[0].describe()})")
    if chains:
        parts.append(f"{len(chains)} base chain(s) with `policy drop` and no counter "
                     f"(e.g. {chains[0].describe()})")
    if not parts:
        return None
    return (" and ".join(parts) + ": their drops are invisible to counters; add `counter` to the "
            "rules (a policy is seen through a final `counter drop` rule) or trace the NETFILTER_DROP reason")


@evaluator("netfilter_drop")
def netfilter_drop(rule: Rule, window: Window) -> Finding | None | str:
    after: Ruleset | None = window.after.data("nftables")
    before: Ruleset | None = window.before.data("nftables")
    if after is None or before is None:
        result = window.after.results.get("nftables")
        return f"nftables rules not readable ({result.error if result and result.error else 'no data'})"
    values = matching(rule.drop_counters, window.deltas.values)
    moved = {name: value for name, value in values.items() if value}
    drops = sum(moved.values())
    if drops <= 0:
        if any(name in values for name in window.deltas.resets):
            return "counter reset during the window (nft reset counters, or the ruleset was reloaded)"
        return _blind_spots(after)  # None when every dropping rule and policy is counted
    seconds = window.seconds or 1.0
    evidence, subjects, fixes = [], [], []
    rules_after = {r.key: r for r in after.rules}  # one lookup per moved counter, any ruleset size
    rules_before = {r.key: r for r in before.rules}
    chains_after = {c.key: c for c in after.chains}
    ranked = sorted(moved.items(), key=lambda item: (-item[1], item[0]))
    for name, delta in ranked[:MAX_SUBJECTS]:
        key = name[len("nft.drop."):-len(".packets")] if name.startswith("nft.drop.") else None
        nft_rule = rules_after.get(key) if key else None
        if nft_rule is not None:
            old = rules_before.get(key)
            nbytes = (nft_rule.bytes - old.bytes if old and old.bytes is not None and nft_rule.bytes is not None
                      and nft_rule.bytes >= old.bytes else None)
            evidence.append(_rule_evidence(name, delta, seconds, nft_rule.describe()))
            subject = {"rule": nft_rule.describe(), "drops": delta, "bytes": nbytes,
                       "family": nft_rule.family, "table": nft_rule.table, "chain": nft_rule.chain,
                       "handle": nft_rule.handle, "verdict": nft_rule.verdict,
                       "matches": nft_rule.matches, "comment": nft_rule.comment}
            if not nft_rule.counter_exact:
                subject["counter_note"] = ("the counter sits before a match of this rule: it counts every "
                                           "packet that reached it, an upper bound for the drops")
            subjects.append(subject)
            fixes.append(_rule_fix(nft_rule, delta, delta / seconds))
            continue
        chain = chains_after.get(name[len("nft.policy."):-len(".packets")]) if name.startswith("nft.policy.") else None
        if chain is not None:
            evidence.append(_rule_evidence(name, delta, seconds, f"policy drop of {chain.describe()}"))
            subjects.append({"chain": chain.describe(), "policy": "drop", "drops": delta,
                             "family": chain.family, "table": chain.table, "hook": chain.hook})
            fixes.append(_policy_fix(chain, delta, delta / seconds))
    rest = ranked[MAX_SUBJECTS:]
    if rest:
        evidence.append({"source": "nftables", "more_rules": len(rest), "drops": sum(d for _, d in rest),
                         "note": f"{len(rest)} more dropping rules/policies moved; the {MAX_SUBJECTS} "
                                 "largest are listed"})
    finding = new_finding(rule, window, drops, evidence)
    finding.subjects = subjects
    finding.fixes = fixes
    notes = [("counted by the counters of the rules that drop or reject; a base chain's `policy drop` "
              "is counted only when the chain has a counter (iptables-nft chains do, nft chains cannot)")]
    blind = _blind_spots(after)
    if blind:
        notes.append(blind)
    if before.generation is not None and after.generation is not None and before.generation != after.generation:
        notes.append(f"the ruleset changed during the window (generation {before.generation} -> "
                     f"{after.generation}): rules added or replaced in between are not counted")
    legacy = window.after.results.get("iptables_legacy")
    if legacy is not None and legacy.status == "unavailable" and legacy.error:
        notes.append(legacy.error)
    finding.explanation = "; ".join(notes)
    return finding

# --- conntrack.table_full -----------------------------------------------------------------

NEAR_FULL = 0.9  # fill ratio (count / max) reported as a warning even without drops
BUCKET_CHAIN = 1  # the kernel's default: nf_conntrack_max == nf_conntrack_buckets
ENTRY_BYTES = 320  # slab object of struct nf_conn, ~256-320 bytes on x86_64


def _sum(window: Window, counter: str) -> int | None:
    values = matching((f"conntrack.cpu*.{counter}",), window.deltas.values)
    known = [v for v in values.values() if v is not None]
    return sum(known) if known else None


def _count(snapshot, stats: ConntrackStats | None) -> int | None:
    values = snapshot.data("sysctls") or {}
    count = values.get(COUNT)
    if isinstance(count, int):
        return count
    return stats.entries if stats is not None else None


def _has_clash_resolve(stats: ConntrackStats | None) -> bool:
    return stats is not None and "clashres" in stats.columns


@evaluator("conntrack_table_full")
def conntrack_table_full(rule: Rule, window: Window) -> Finding | None | str:
    after: ConntrackStats | None = window.after.data("conntrack")
    before: ConntrackStats | None = window.before.data("conntrack")
    if after is None or before is None:
        result = window.after.results.get("conntrack")
        return f"conntrack statistics not readable ({result.error if result and result.error else 'no data'})"
    if any(name.startswith("conntrack.") and name.rsplit(".", 1)[1] in ("drop", "early_drop")
           for name in window.deltas.resets):
        return "counter reset during the window"
    drop = _sum(window, "drop") or 0
    early = _sum(window, "early_drop") or 0
    failed = _sum(window, "insert_failed") or 0
    # Since clash resolution (kernels whose header says `clashres`), a clash that could not
    # be resolved counts in both drop and insert_failed: that is conntrack.insert_failed.
    table_drops = max(drop - failed, 0) if _has_clash_resolve(after) else drop
    maximum = sysctl(window, MAX)
    buckets = sysctl(window, BUCKETS)
    counts = [c for c in (_count(window.before, before), _count(window.after, after)) if c is not None]
    peak = max(counts) if counts else None
    fill = peak / maximum if isinstance(maximum, int) and maximum > 0 and peak is not None else None
    drops = table_drops + early
    if drops <= 0 and (fill is None or fill < NEAR_FULL):
        return None
    seconds = window.seconds or 1.0
    evidence: list[dict[str, Any]] = []
    for name in ("drop", "early_drop", "insert_failed"):
        total = _sum(window, name)
        if total:
            evidence.append({"source": "conntrack", "counter": f"conntrack.{name}", "delta": total,
                             "rate_per_s": round(total / seconds, 3)})
    evidence.append({"source": "sysctls", "nf_conntrack_count_peak": peak, "nf_conntrack_max": maximum,
                     "fill": f"{fill:.0%}" if fill is not None else None, "nf_conntrack_buckets": buckets})
    finding = new_finding(rule, window, drops, evidence)
    if drops <= 0:
        finding.severity = "warning"
        finding.summary = (f"the conntrack table is {fill:.0%} full (peak {peak} of nf_conntrack_max "
                           f"{maximum}): new connections will be dropped once it fills")
    where = f"network namespace {window.after.netns}" if window.after.netns else "this namespace"
    finding.subjects.append({"conntrack_table": where, "count_peak": peak, "max": maximum,
                             "fill": round(fill, 3) if fill is not None else None, "buckets": buckets,
                             "drops": table_drops, "early_drops": early})
    notes = []
    if table_drops:
        notes.append(f"{table_drops} packets of new connections were dropped because no conntrack entry "
                     f"could be allocated (`nf_conntrack: table full, dropping packet` in dmesg)")
    if early:
        notes.append(f"{early} not-yet-assured connections were evicted (early_drop) to make room: those "
                     "connections lose their state and usually fail")
    if fill is not None and fill < NEAR_FULL and drops:
        notes.append(f"the table was {fill:.0%} full in the snapshots: it filled up between them, or the "
                     "drops were allocation failures")
    if window.after.netns:
        notes.append("the count is per network namespace but nf_conntrack_max is one host-wide limit that "
                     "every namespace's count is compared against")
    finding.explanation = "; ".join(notes) or None
    finding.fixes.extend(_table_fixes(window, maximum, buckets, peak, drops))
    return finding


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.0f} {unit}"
    return f"{nbytes} bytes"


HEADROOM = 1.5  # the table is sized for what it had to hold plus half again


def table_proposal(maximum: int, peak: int | None, drops: int) -> int:
    """Entries for the peak count plus every connection refused (or evicted) in the window -
    each needed an entry - with HEADROOM, a power of two, at least twice the limit."""
    return next_power_of_two(max(2 * maximum, int(((peak or 0) + max(drops, 0)) * HEADROOM)))


def _table_fixes(window: Window, maximum: Any, buckets: Any, peak: int | None,
                 drops: int = 0) -> list[dict[str, Any]]:
    fixes: list[dict[str, Any]] = []
    if isinstance(maximum, int) and maximum > 0:
        proposed = table_proposal(maximum, peak, drops)
        held = f"the peak of {peak} entries plus the {drops} refused in the window, with 50% headroom; " \
            if drops and peak is not None else ""
        fixes.append(sysctl_fix(window, MAX, maximum, proposed, (
            f"{held}set it in the host (initial) namespace; up to {_size(proposed * ENTRY_BYTES)} of kernel "
            f"memory at {proposed} entries (~{ENTRY_BYTES} bytes each); persist in /etc/sysctl.d/")))
        if isinstance(buckets, int) and buckets > 0 and proposed > buckets * BUCKET_CHAIN:
            fixes.append(sysctl_fix(window, BUCKETS, buckets, proposed // BUCKET_CHAIN, (
                "hash buckets to match (the kernel's default is one bucket per allowed entry; longer "
                "chains slow every lookup); persist with `options nf_conntrack hashsize=N` in /etc/modprobe.d/")))
    timeouts = []
    for key in TIMEOUT_KEYS:
        value = sysctl(window, key)
        if isinstance(value, int):
            timeouts.append(f"{key.rsplit('.', 1)[1]}={value} s" + (f" ({value / 86400:.1f} days)"
                                                                    if value >= 86400 else ""))
    text = ("find what fills the table (`conntrack -L -o extended | awk '{print $3}' | sort | uniq -c`); "
            "if idle entries fill it, shorten their timeouts")
    if timeouts:
        text += f" (now {', '.join(timeouts)}; per network namespace)"
    text += ("; exempt high-volume stateless traffic with `notrack` in a raw/prerouting chain; a flood only "
             "moves the limit, find its source")
    fixes.append({"kind": "config", "text": text})
    return fixes

# --- conntrack.insert_failed --------------------------------------------------------------

NAT_EXPRESSIONS = ("nat", "masq", "redir")


def _nat_chains(ruleset: Ruleset | None) -> list[str]:
    if ruleset is None:
        return []
    found = [c.describe() for c in ruleset.chains if c.type == "nat"]
    for rule in ruleset.rules:
        if any(e in NAT_EXPRESSIONS for e in rule.expressions) or (
                rule.verdict or "").startswith(("xt target MASQUERADE", "xt target SNAT", "xt target DNAT")):
            where = f"{rule.family} {rule.table} {rule.chain}"
            if not any(where in f for f in found):
                found.append(where)
    return found


@enricher("conntrack_insert_failed")
def conntrack_insert_failed(finding: Finding, window: Window) -> None:
    stats: ConntrackStats | None = window.after.data("conntrack")
    for name, value in sorted(window.deltas.values.items()):
        if name.startswith("conntrack.cpu") and name.endswith(".insert_failed") and value:
            cpu = int(name.split(".")[1][3:])
            subject: dict[str, Any] = {"cpu": cpu, "insert_failed": value}
            for other in ("clash_resolve", "chaintoolong"):
                delta = window.deltas.values.get(f"conntrack.cpu{cpu}.{other}")
                if delta is not None:
                    subject[other] = delta
            finding.subjects.append(subject)
    resolved = _sum(window, "clash_resolve")
    too_long = _sum(window, "chaintoolong")
    notes = [("two packets of one new flow were processed at the same time on different CPUs, or two flows "
              "were NATed to the same tuple: the second conntrack entry could not be inserted and its "
              "packet was dropped (usually the first packet of a flow: the client retries after its timeout)")]
    if resolved:
        notes.append(f"the kernel resolved {resolved} other clashes without a drop (clash_resolve)")
    if not _has_clash_resolve(stats):
        notes.append("this kernel has no clash_resolve counter: its insert_failed also counts clashes "
                     "that were resolved without a drop, so it is an upper bound")
    nat = _nat_chains(window.after.data("nftables"))
    if nat:
        notes.append(f"NAT is configured here ({'; '.join(nat[:3])})")
        finding.fixes.append({"kind": "config", "text": (
            "SNAT/masquerade port-allocation races: let the kernel pick source ports fully at random "
            "(`masquerade fully-random` / `snat to ... fully-random` in nft, `--random-fully` on iptables "
            "MASQUERADE/SNAT) so concurrent flows do not map to the same tuple")})
    finding.fixes.append({"kind": "app", "text": (
        "UDP clients that send two datagrams of a new flow at once from one socket race in conntrack "
        "(glibc resolver A+AAAA in parallel, the Kubernetes DNS '5 s timeout'): `options single-request-reopen` "
        "in /etc/resolv.conf, or a node-local DNS cache that avoids NAT; kernels >= 5.x resolve more UDP "
        "clashes themselves")})
    if too_long:
        notes.append(f"{too_long} inserts failed because a hash chain was too long (chaintoolong)")
        buckets = sysctl(window, BUCKETS)
        if isinstance(buckets, int) and buckets > 0:
            finding.fixes.append(sysctl_fix(window, BUCKETS, buckets, next_power_of_two(2 * buckets),
                                            "longer hash chains than the kernel accepts: more buckets "
                                            "shorten them (set in the host namespace)"))
    finding.explanation = "; ".join(notes)
