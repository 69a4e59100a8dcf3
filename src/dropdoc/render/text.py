"""Terminal rendering with rich: a verdict line, layer overview, then each finding with
its evidence, affected sockets/processes, explanation and fixes."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..model import Diagnosis, Finding
from ..rules.engine import LAYERS, load_rules

SEVERITY_STYLE = {"critical": "bold red", "warning": "bold yellow", "info": "cyan"}


def verdict(diagnosis: Diagnosis) -> Text:
    if not diagnosis.measured:
        return Text("COULD NOT MEASURE: the core counters were unreadable", style="bold red")
    harmful = [f for f in diagnosis.findings if f.harmful]
    if not harmful:
        return Text("HEALTHY: no packet drops that need action", style="bold green")
    worst = harmful[0]
    return Text(f"{worst.severity.upper()}: {len(harmful)} cause(s) of packet loss, worst "
                f"{worst.id} at {worst.rate_per_s:.1f} drops/s", style=SEVERITY_STYLE[worst.severity])


def layer_overview(diagnosis: Diagnosis) -> Text:
    rules = load_rules()
    line = Text("layers: ")
    for index, layer in enumerate(LAYERS):
        ids = {r.id for r in rules if r.layer == layer}
        found = [f for f in diagnosis.findings if f.layer == layer and f.harmful]
        if index:
            line.append(" · ")
        if not ids:
            line.append(f"{layer} not checked yet", style="dim")
        elif found:
            line.append(f"{layer} {found[0].severity}", style=SEVERITY_STYLE[found[0].severity])
        elif ids <= set(diagnosis.not_evaluated):
            line.append(f"{layer} no data", style="yellow")
        else:
            line.append(f"{layer} ok", style="green")
    return line


def _subject_line(subject: dict[str, Any]) -> str:
    if "rule" in subject and "drops" in subject:  # a firewall rule (netfilter.drop)
        size = f" ({subject['bytes']} bytes)" if subject.get("bytes") is not None else ""
        return "; ".join([subject["rule"], f"{subject['drops']} packets{size}"]
                         + ([subject["counter_note"]] if subject.get("counter_note") else []))
    if "socket" in subject:
        owner = (f"pid {subject['pid']} ({subject['process']})" if subject.get("pid") is not None
                 else "owner unknown")
        parts = [f"{subject['socket']}  {owner}"]
        if "backlog" in subject:
            parts.append(f"backlog {subject['backlog']} (somaxconn {subject['somaxconn']}) -> capped by {subject['capped_by']}")
            parts.append(f"accept queue peak {subject['accept_queue']}, full in {subject['full_samples']}/{subject['samples']} samples")
        if "drops" in subject:
            parts.append(f"{subject['drops']} drops, rx queue {subject.get('rx_queue')}")
        if subject.get("suspected"):
            parts.append("suspected (not seen full)")
        return "; ".join(parts)
    return ", ".join(f"{k} {v}" for k, v in subject.items())


def _sysctl_value(value: Any, quote: bool = False) -> str:
    """Triples (tcp_rmem, tcp_mem...) as sysctl takes them: "4096 131072 6291456"."""
    if isinstance(value, (list, tuple)):
        text = " ".join(map(str, value))
        return f'"{text}"' if quote else text
    return str(value)


def _fix_line(fix: dict[str, Any]) -> str:
    if fix["kind"] == "sysctl":
        command = f"sysctl -w {fix['key']}={_sysctl_value(fix['proposed'], quote=True)}"
        if fix.get("netns") and "per network namespace" in fix.get("scope", ""):
            command = f"ip netns exec {fix['netns']} {command}"
        return f"{command}   (now {_sysctl_value(fix['current'])}; {fix['scope']}) - {fix['note']}"
    return f"{fix['kind']}: {fix['text']}"


def finding_panel(number: int, finding: Finding) -> Panel:
    style = SEVERITY_STYLE.get(finding.severity, "")
    body: list[Any] = [Text(finding.summary)]
    if finding.benign:
        body.append(Text(f"benign: {finding.explanation}", style="green"))
    evidence = Table(show_header=False, box=None, padding=(0, 1))
    notes: list[Text] = []
    for item in finding.evidence:
        if "counter" in item:
            rate = f"({item['rate_per_s']:.1f}/s)" if "rate_per_s" in item else ""
            evidence.add_row(item["counter"], f"+{item['delta']}", rate)
        elif item.get("source") == "trace" and "reason" in item:
            where = ", ".join(loc["location"] for loc in item.get("locations", []))
            evidence.add_row(f"trace {item['reason']}", f"x{item['count']}", f"at {where}" if where else "")
        elif item.get("source") == "trace":
            notes.append(Text(f"  trace: {item.get('note', '')}", style="dim"))
        else:
            detail = " ".join(f"{k}={v}" for k, v in item.items() if k != "source")
            notes.append(Text(f"  {item.get('source', '')}: {detail}"))
    body += [Text("evidence", style="bold"), evidence, *notes]
    if finding.subjects:
        body.append(Text("affected", style="bold"))
        body += [Text("  " + _subject_line(s)) for s in finding.subjects]
    if finding.explanation and not finding.benign:
        body.append(Text(f"why: {finding.explanation}", style="italic"))
    if finding.fixes:
        body.append(Text("fix", style="bold"))
        body += [Text("  " + _fix_line(f)) for f in finding.fixes]
    body.append(Text(f"runbook: {finding.runbook}", style="dim"))
    title = Text(f"[{number}] {finding.severity.upper()} {finding.id}", style=style)
    title.append(f"  {finding.layer} - {finding.drops} drops, {finding.rate_per_s:.1f}/s", style="")
    return Panel(Group(*body), title=title, title_align="left", border_style=style or "white")


def coverage_text(diagnosis: Diagnosis) -> Text:
    gaps = {name: status for name, status in diagnosis.coverage.items() if status != "ok"}
    text = Text(f"coverage: {len(diagnosis.coverage) - len(gaps)}/{len(diagnosis.coverage)} sources ok")
    for name, status in gaps.items():
        reason = diagnosis.coverage_errors.get(name, "")
        text.append(f"\n  gap: {name} {status}: {reason}", style="yellow")
    for rule_id, why in diagnosis.not_evaluated.items():
        text.append(f"\n  not evaluated: {rule_id} ({why})", style="yellow")
    if diagnosis.counter_resets:
        text.append(f"\n  counters reset during the window (ignored): {', '.join(diagnosis.counter_resets[:5])}",
                    style="yellow")
    return text


def trace_text(diagnosis: Diagnosis) -> Text | None:
    """What the drop tracer saw that no finding accounts for, and its own health."""
    trace = diagnosis.trace
    if trace is None:
        return None
    if trace.get("status") != "ok":
        return Text(f"trace: {trace.get('status')} ({trace.get('error') or 'no backend'})", style="yellow")
    lost = trace.get("lost")
    text = Text(f"trace ({trace.get('backend')}): {trace.get('total', 0)} drops traced"
                + (f", {lost} events lost" if lost else ""))
    for entry in trace.get("unmatched", []):
        where = entry["locations"][0]["location"] if entry.get("locations") else "?"
        style = "dim" if entry["benign"] else "yellow"
        label = "benign" if entry["benign"] else "only in trace"
        hint = f" (see {entry['hint']})" if entry.get("hint") else ""
        text.append(f"\n  {label}: {entry['reason']} x{entry['count']} ({entry['rate_per_s']:.1f}/s) at {where}"
                    f" - {entry['explanation']}{hint}", style=style)
    if trace.get("counter_only"):
        text.append(f"\n  seen only by counters: {', '.join(trace['counter_only'])}", style="dim")
    return text


def render(diagnosis: Diagnosis, console: Console) -> None:
    where = f"netns {diagnosis.netns}" if diagnosis.netns else "host namespace"
    console.print(Text(f"dropdoc diagnosis - {diagnosis.hostname}, kernel {diagnosis.kernel}, {where}, "
                       f"{diagnosis.seconds:.1f} s window", style="bold"))
    console.print(verdict(diagnosis))
    console.print(layer_overview(diagnosis))
    for number, finding in enumerate(diagnosis.findings, 1):
        console.print(finding_panel(number, finding))
    trace = trace_text(diagnosis)
    if trace is not None:
        console.print(trace)
    console.print(coverage_text(diagnosis))


def render_lab(result, console: Console) -> None:
    """A lab run: the diagnosis, then (with --fix) what changed and the drops before/after."""
    scenario = result.scenario
    console.print(Text(f"lab scenario {scenario.name}: {scenario.description}", style="bold"))
    console.print(f"load: {result.before.load}")
    render(result.before.diagnosis, console)
    if result.after is None:
        return
    console.rule("fix")
    for change in result.applied:
        verdict = f" - {change['verdict']}" if change.get("verdict") else ""  # dropdoc.fix verification
        if change.get("restored"):
            verdict += f", rolled back ({change['restored']})"
        where = f"in netns {change['netns']}" if change.get("netns") else "host-wide (global key, restored on teardown)"
        console.print(f"applied {where}: {change['key']} {change['old']} -> {change['new']}{verdict}")
    _lab_simulations(getattr(result, "fix_report", None), console)
    for refusal in result.refused:
        console.print(Text(f"refused: {refusal}", style="yellow"))
    console.print(f"server restarted (pid {result.server_pid} -> {result.server_pid_after}) so listen() uses the new limits")
    console.print(f"load: {result.after.load}")
    render(result.after.diagnosis, console)
    console.print(Text(f"{scenario.expected_finding}: before and after the fix", style="bold"))
    table = Table()
    for column in ("", "drops", "drops/s"):
        table.add_column(column)
    for label, measurement in (("before", result.before), ("after", result.after)):
        finding = measurement.diagnosis.finding(scenario.expected_finding) if scenario.expected_finding else None
        drops = finding.drops if finding else 0
        rate = finding.rate_per_s if finding else 0.0
        table.add_row(label, str(drops), f"{rate:.1f}")
    console.print(table)


def _lab_simulations(report, console: Console) -> None:
    """The plan's simulator justifications (changes and application actions), as `dropdoc fix` prints them."""
    if report is None or getattr(report, "plan", None) is None:
        return
    from ..fix.sim_support import predicted_line

    items = [(c.target, c.simulation) for c in report.plan.changes]
    items += [(f"{a['kind']} action", a.get("simulation")) for a in report.plan.actions]
    for target, simulation in items:
        if simulation:
            console.print(f"simulator ({target}): {simulation.get('text', '')}")
            predicted = predicted_line(simulation)
            if predicted:
                console.print(f"  {predicted}")


def lab_exit_code(result) -> int:
    """0 when the lab did what it claims: the fault was found (and, with --fix, fixed)."""
    expected = result.scenario.expected_finding
    found = result.before.diagnosis.findings
    if expected is None:
        return 0 if result.before.diagnosis.healthy else 1
    if not found or found[0].id != expected:
        return 1
    if result.after is not None and result.after.diagnosis.finding(expected) is not None:
        return 1
    report = getattr(result, "fix_report", None)
    if report is not None and report.exit_code != 0:  # e.g. inconclusive: the drops may only be postponed
        return 1
    return 0
