"""The simulator's part in a fix plan: why the proposed queue size is enough, and what the
drops should become once it is in force - before anything is applied.

One module per finding replays the window's load in the model (dropdoc.sim), from the
finding as the JSON contract carries it (so a live plan and `--from` agree):

- sim_support_tcp: tcp.listen_overflow -> net.core.somaxconn;
- sim_support_udp: udp.rcvbuf_full -> net.core.rmem_default / rmem_max, and the
  application's SO_RCVBUF and reading speed (actions dropdoc does not take itself);
- sim_support_backlog: cpu.backlog_drop -> net.core.netdev_max_backlog.

Each gives the smallest value without drops for the measured burst, the predicted drops/s
with the value in force and with the proposed one, and one sentence. A queue that is full
(nearly) all window long, or that no sane size absorbs, is sustained overload: a bigger
queue only delays the drops, and the sentence says what helps instead (DESIGN, kernel
facts). A proposal the model shows too small is raised to the model's minimum (rounded
up to a power of two), never lowered.

Everything here is advisory: when the simulator is missing or fails, the plan is the same
without the justification, and says so in one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

SUSTAINED_FULL_FRACTION = 0.9       # queue full (dropping) in >= 90 % of the samples: overload all window long
STEPS = 2000                        # model steps per simulated window: ~10 ms per run here
SUSTAINED_HORIZON_S = 60.0          # steady state of a sustained overload: a minute of it
# Below the model's minimum by less than this is not "too small": the sizing search stops at
# 0.5 % and the model's own rounding of a replayed burst is a few % (docs/sim.md).
MODEL_MARGIN = 0.05


class SimUnavailable(Exception):
    """The simulator could not be imported or failed: the plan goes on without it."""


@dataclass
class Justification:
    """The simulator's view of one proposed change (or application action)."""
    finding: str
    target: str
    current: Any
    proposed: Any
    needed: int | None              # smallest value without drops (None: no size helps)
    sustained: bool
    before_per_s: float | None      # predicted drops/s with the value in force
    after_per_s: float | None       # ... with the proposed value
    text: str
    inputs: dict[str, Any] = field(default_factory=dict)
    raised_from: Any = None         # the enricher's proposal when the model showed it too small

    def to_dict(self) -> dict[str, Any]:
        return {"model": "dropdoc.sim", "finding": self.finding, "target": self.target, "needed": self.needed,
                "sustained": self.sustained,
                "predicted_before_per_s": _r(self.before_per_s), "predicted_after_per_s": _r(self.after_per_s),
                "text": self.text, "inputs": self.inputs,
                **({"horizon_seconds": self.inputs["horizon_seconds"]} if "horizon_seconds" in self.inputs else {}),
                **({"raised_from": self.raised_from} if self.raised_from is not None else {})}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# ---- words and numbers ------------------------------------------------------------------------

def rate(value: float) -> str:
    """3000 -> '3,000', 58.6 -> '59', 2.35 -> '2.4'."""
    if value >= 10:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def span(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def size(value: int) -> str:
    """4194304 -> '4 MiB', 2304000 -> '2.2 MiB', 212992 -> '208 KiB', 1000 -> '1,000 bytes'."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= factor:
            amount = f"{value / factor:.0f}" if value >= 100 * factor else f"{value / factor:.1f}"
            return f"{amount.removesuffix('.0')} {unit}"
    return f"{value:,} bytes"


def power_of_two(value: int) -> int:
    return 1 << max(int(value) - 1, 0).bit_length()


def enough(proposed: int, needed: int | None) -> bool:
    """Proposed holds what the model needs, within the model's precision (MODEL_MARGIN)."""
    return needed is not None and proposed >= needed * (1 - MODEL_MARGIN)


# ---- reading the finding (the JSON contract) ----------------------------------------------------

def evidence_delta(finding: dict[str, Any], counter: str) -> int | None:
    for item in finding.get("evidence", []):
        if isinstance(item, dict) and item.get("counter") == counter and isinstance(item.get("delta"), int):
            return item["delta"]
    return None


def evidence_with(finding: dict[str, Any], source: str, key: str) -> dict[str, Any] | None:
    """The first evidence item of `source` that carries `key`."""
    for item in finding.get("evidence", []):
        if isinstance(item, dict) and item.get("source") == source and key in item:
            return item
    return None


def number(item: dict[str, Any] | None, key: str, integer: bool = False) -> Any:
    """item[key] when it is a (non-negative) number of the right kind, else None."""
    value = (item or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or value < 0:
        return None
    return value


@dataclass(frozen=True)
class Burst:
    """The worst burst of drops the window's samples show (bursts.py in the enrichers):
    its length, drops, and what the consumer (reader, CPU) took meanwhile. Not sampled
    (a bundle, an old diagnosis): the whole window, the gentlest reading."""
    seconds: float
    drops: int
    served: int
    sampled: bool
    drop_fraction: float | None     # share of the samples with drops (None: not sampled)

    @property
    def whole_window(self) -> bool:
        return self.drop_fraction is not None and self.drop_fraction >= SUSTAINED_FULL_FRACTION


def burst_from(item: dict[str, Any] | None, served_key: str, window_s: float, drops: int,
               served: int) -> Burst:
    """The burst fields an enricher wrote (samples, drop_samples, burst_seconds, burst_drops,
    burst_<served_key>) or, without them, the whole window's drops and service."""
    samples, dropping = number(item, "samples", True), number(item, "drop_samples", True)
    length, burst_drops = number(item, "burst_seconds"), number(item, "burst_drops", True)
    burst_served = number(item, f"burst_{served_key}", True)
    if samples and length and burst_drops and burst_served is not None and dropping is not None:
        return Burst(max(float(length), 1e-3), burst_drops, burst_served, True, dropping / samples)
    return Burst(window_s, drops, served, False, None)


# ---- the model --------------------------------------------------------------------------------

def sim():
    """(SimParams, simulate, smallest_queue_without_drops), or SimUnavailable."""
    try:
        from ..sim import SimParams, simulate
        from ..sim.sizing import smallest_queue_without_drops
    except Exception as exc:  # noqa: BLE001 - any import failure: the plan goes on without it
        raise SimUnavailable(f"simulator not available ({type(exc).__name__}: {exc})") from None
    return SimParams, simulate, smallest_queue_without_drops


def run_model(what: Callable[[], Any]) -> Any:
    """Call the model; any failure of it becomes SimUnavailable (it must not break the plan)."""
    try:
        return what()
    except SimUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001
        raise SimUnavailable(f"simulator failed ({type(exc).__name__}: {exc})") from None


# ---- which finding and setting each module justifies ----------------------------------------------

@dataclass(frozen=True)
class Justifier:
    """How one (finding, setting) is justified: justify(finding, current, proposed, seconds)
    -> Justification | None; suggest(needed) -> the value to raise a too-small proposal to;
    follow(plan, planned, raised) moves the changes that must go with a raised value
    (rmem_max with rmem_default)."""
    justify: Callable[[dict[str, Any], Any, Any, float | None], Justification | None]
    suggest: Callable[[int], int]
    follow: Callable[[Any, Any, int], None] | None = None


@lru_cache(maxsize=1)
def _registry() -> tuple[dict[tuple[str, str], Justifier], dict[tuple[str, str], Callable[..., Any]]]:
    # Imported here, not at the top: the finding modules import this one's helpers.
    from . import sim_support_backlog, sim_support_tcp, sim_support_udp

    changes: dict[tuple[str, str], Justifier] = {}
    actions: dict[tuple[str, str], Callable[..., Any]] = {}
    for module in (sim_support_tcp, sim_support_udp, sim_support_backlog):
        changes.update(getattr(module, "JUSTIFIERS", {}))
        actions.update(getattr(module, "ACTION_JUSTIFIERS", {}))
    return changes, actions


def justify(finding: dict[str, Any], target: str, current: Any, proposed: Any,
            seconds: float | None) -> Justification | None:
    """The simulator's justification of `target` = `proposed` for `finding`; None when the
    model has nothing to say about this change. Raises SimUnavailable when it should have
    but cannot (import or model failure)."""
    justifier = _registry()[0].get((finding.get("id"), target))
    if justifier is None:
        return None
    return justifier.justify(finding, current, proposed, seconds)


def justify_action(finding: dict[str, Any], fix: dict[str, Any], seconds: float | None) -> Justification | None:
    """The same for an application action (a fix record of kind app with a `setting`,
    e.g. SO_RCVBUF or the reader's speed): what it should be and what it would change."""
    justifier = _registry()[1].get((finding.get("id"), fix.get("setting")))
    if justifier is None:
        return None
    return justifier(finding, fix, seconds)


def predicted_line(simulation: dict[str, Any]) -> str:
    """'predicted by the simulator (same burst): 241.2 -> 0.0 drops/s' from a plan's
    `simulation` record (the JSON the plan carries, so --from plans read the same)."""
    before, after = simulation.get("predicted_before_per_s"), simulation.get("predicted_after_per_s")
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
        return ""
    if simulation.get("horizon_seconds"):
        return (f"predicted by the simulator (the same rates for {simulation['horizon_seconds']:.0f} s): "
                f"{before:.1f} -> {after:.1f} drops/s")
    line = f"predicted by the simulator (same burst): {before:.1f} -> {after:.1f} drops/s"
    if simulation.get("sustained") and after < before:
        line += " in this window; longer overload keeps dropping"
    return line


# ---- in the plan --------------------------------------------------------------------------------

def _note(plan: Any, target: str, exc: Exception) -> None:
    reason = exc if isinstance(exc, SimUnavailable) else f"{type(exc).__name__}: {exc}"
    note = f"{target}: no simulator justification or predicted effect - {reason}"
    if note not in plan.notes:
        plan.notes.append(note)


def _justify_change(plan: Any, planned: Any, finding: dict[str, Any]) -> Justification | None:
    found = justify(finding, planned.target, planned.current, planned.proposed, plan.window_seconds)
    justifier = _registry()[0].get((finding.get("id"), planned.target))
    if found is None or justifier is None or found.sustained or found.needed is None \
            or not isinstance(planned.proposed, int) or enough(planned.proposed, found.needed):
        return found
    raised = justifier.suggest(found.needed)
    if raised <= planned.proposed:
        return found
    again = justify(finding, planned.target, planned.current, raised, plan.window_seconds)
    if again is None:
        return found
    again.raised_from = planned.proposed
    planned.why += (f" The simulator shows {planned.proposed} too small for the measured "
                    f"burst (it needs {found.needed:,}): raised to {raised}.")
    planned.proposed = planned.change.value = raised
    if justifier.follow is not None:
        justifier.follow(plan, planned, raised)
    return again


def attach(plan: Any) -> None:
    """Give each planned change - and each application action - the simulator has a model
    for its `simulation` record; a proposal the model shows too small for the measured
    burst is raised to the model's minimum (rounded up to a power of two) - never lowered.
    Without the simulator: one note."""
    for planned in list(plan.changes):
        for finding_id in planned.findings:
            finding = plan.finding(finding_id)
            if finding is None:
                continue
            try:
                found = _justify_change(plan, planned, finding)
            except Exception as exc:  # noqa: BLE001 - advisory: never let it break a plan
                _note(plan, planned.target, exc)
                break
            if found is not None:
                planned.simulation = found.to_dict()
                break
    for action in plan.actions:
        finding = plan.finding(action.get("finding"))
        # The action carries only its text: find the fix record it came from (its fields).
        fix = next((f for f in (finding or {}).get("fixes", []) if isinstance(f, dict)
                    and f.get("kind") == action.get("kind") and f.get("text") == action.get("text")), None)
        if finding is None or fix is None or not fix.get("setting"):
            continue
        try:
            found = justify_action(finding, fix, plan.window_seconds)
        except Exception as exc:  # noqa: BLE001 - advisory
            _note(plan, str(fix["setting"]), exc)
            continue
        if found is not None:
            action["simulation"] = found.to_dict()


def follow_change(plan: Any, planned: Any, target: str, value: int, why: str,
                  current: Any = None) -> None:
    """Raise the planned change of `target` for the same findings to at least `value`, or
    plan it (a copy of `planned` with the other key) when the plan has none."""
    for other in plan.changes:
        if other.target == target and other.change.netns == planned.change.netns:
            if isinstance(other.proposed, int) and other.proposed < value:
                other.proposed = other.change.value = value
                other.why += " " + why
            return
    if isinstance(current, int) and current >= value:
        return
    change = dataclasses.replace(planned.change, key=target, value=value)
    plan.changes.append(dataclasses.replace(
        planned, change=change, proposed=value, current=current, current_from="diagnosis", why=why,
        note="", simulation=None, findings=list(planned.findings), subjects=list(planned.subjects), direction=1))


# ---- names kept from when this module held the listen-overflow model --------------------------

_TCP_NAMES = ("LISTEN", "SOMAXCONN", "SOMAXCONN_CEILING", "LONG_WAIT_S", "ListenLoad", "listen_load",
              "listen_params", "justify_listen", "_listen_verdict", "suggested_value")


def __getattr__(name: str) -> Any:
    if name in _TCP_NAMES:
        from . import sim_support_tcp

        return getattr(sim_support_tcp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
