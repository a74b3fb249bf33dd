"""Attribution: which fault most likely caused each anomaly, and whether the run's
configuration documents it as a trade-off.

A pure function of three timelines (as Jepsen's kafka.clj explains each anomaly
family from the history): the checker's evidence (history indices, log, offsets,
values), the fault timeline (the history's nemesis events) and the cluster's own view
(`cluster.jsonl` in the sim: leaders, epochs, ISRs, power cuts; see
`harness.runtime.sim.cluster_view`). Nothing here reads files or the clock.

One function per anomaly family (`explain_loss`, `explain_duplication`,
`explain_ordering`, `explain_group`, `explain_phantom`); `explain` runs them all. Each
returns `Explanation`s, one per anomaly type and log, with one sentence of cause and,
when a documented trade-off of the configuration accounts for every instance, the
trade-off's name and the evidence that it does. Anything else stays unexplained, so
a real bug under Kafka's default flush policy still stands out.

The trade-offs named (each a documented property of Kafka, not a bug):
- `flush-never`: writes acknowledged but not fsynced on any replica are lost when
  every replica that held them loses power (log.flush.* defaults; `--flush every`);
- `acks`: with acks=0/1 a write acknowledged by a leader alone is lost when that leader
  is cut off or killed and another replica is elected without it;
- `unclean-election`: unclean.leader.election.enable lets an out-of-ISR replica lead;
- `commit-before`: committing before processing loses what a crashed consumer had
  fetched but not processed (at-most-once);
- `no-idempotence`: without enable.idempotence, a retried send after a lost response
  (reset connection, partition, crash) is appended twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from checkers.anomalies import FAMILY_OF

FLUSH_NEVER = "flush-never"
ACKS = "acks"
UNCLEAN = "unclean-election"
COMMIT_BEFORE = "commit-before"
NO_IDEMPOTENCE = "no-idempotence"

# What each trade-off is, in the words the console and report use.
TRADEOFF_TEXT: dict[str, str] = {
    FLUSH_NEVER: ("power loss of every replica with flush never: writes acknowledged but "
                  "not fsynced anywhere are lost — Kafka's documented trade-off; "
                  "`--flush every` removes it"),
    ACKS: ("acks=0/1 leader loss: a write only the leader had is lost when another "
           "replica takes over — Kafka's documented trade-off; `--acks all` removes it"),
    UNCLEAN: ("unclean leader election: an out-of-sync replica may lead and drop "
              "acknowledged writes — allowed by unclean.leader.election.enable"),
    COMMIT_BEFORE: ("commit-before crash: offsets committed before processing skip what a "
                    "crashed consumer had fetched — at-most-once by design; "
                    "`--commit after` removes it"),
    NO_IDEMPOTENCE: ("idempotence off: a send retried after a lost response is appended "
                     "twice — Kafka's documented trade-off; enable.idempotence removes it"),
}

# Faults that cut a node off or take it down (a leader's writes can be stranded).
_NODE_DOWN = frozenset({"kill", "power-loss", "pause", "start-partition"})
# Faults after which a client may retry a send whose response it never saw.
_RETRY_CAUSES = frozenset({"reset-connections", "start-partition", "kill", "power-loss",
                           "pause", "start-link-fault"})


# -- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One nemesis event of the history: when, what, and which nodes it names."""

    time: int  # ns, the history's clock
    f: str
    nodes: tuple[str, ...]
    index: int = -1

    @classmethod
    def from_event(cls, index: int, time: int, f: str, value: Any) -> Fault:
        """From a history nemesis event's fields."""
        nodes: set[str] = set()
        if isinstance(value, dict):
            nodes.update(value.get("nodes") or [])
            if value.get("node"):
                nodes.add(value["node"])
            if value.get("isolated"):
                nodes.add(value["isolated"])
            grudge = value.get("grudge") or {}
            if not value.get("isolated"):
                nodes.update(grudge)
        return cls(time, f, tuple(sorted(nodes)), index)


@dataclass(frozen=True)
class LogState:
    """One change of a log's leadership as the cluster saw it (cluster.jsonl `log`)."""

    time: int
    log: str
    leader: str | None
    epoch: int | None
    isr: tuple[str, ...]
    replicas: tuple[str, ...] = ()
    unclean: bool | None = None


@dataclass(frozen=True)
class PowerCut:
    """A node's power cut and the workload values it took (appended, never fsynced)."""

    time: int
    node: str
    lost: Mapping[str, frozenset[int]]  # log -> values


@dataclass(frozen=True)
class ClusterTimeline:
    """The cluster's own view over a run; empty when the target could not record it."""

    logs: tuple[LogState, ...] = ()
    power_cuts: tuple[PowerCut, ...] = ()
    controllers: tuple[tuple[int, str | None], ...] = ()
    nodes: tuple[str, ...] = ()
    recorded: bool = False

    @classmethod
    def from_lines(cls, lines: Iterable[Mapping[str, Any]]) -> ClusterTimeline:
        """From the parsed lines of a cluster.jsonl."""
        logs, cuts, controllers, nodes = [], [], [], ()
        for line in lines:
            kind = line.get("kind")
            if kind == "start":
                nodes = tuple(line.get("nodes", ()))
            elif kind == "log":
                logs.append(LogState(line["time"], line["log"], line["leader"], line["epoch"],
                                     tuple(line["isr"]), tuple(line.get("replicas", ())),
                                     line.get("unclean")))
            elif kind == "power-loss":
                cuts.append(PowerCut(line["time"], line["node"], {
                    log: frozenset(v for _, v in pairs) for log, pairs in line["lost"].items()}))
            elif kind == "controller":
                controllers.append((line["time"], line["controller"]))
        return cls(tuple(logs), tuple(cuts), tuple(controllers), nodes, True)

    def state_at(self, log: str, time: int) -> LogState | None:
        """The log's last known state at `time` (None before the first sample)."""
        found = None
        for state in self.logs:
            if state.log == log and state.time <= time:
                found = state
        return found

    def changes(self, log: str, start: int, end: int) -> list[LogState]:
        """The log's leader changes (new leader or epoch) in (start, end]."""
        out, last = [], self.state_at(log, start)
        for state in self.logs:
            if state.log != log or state.time <= start or state.time > end:
                continue
            moved = last is None or (state.leader, state.epoch) != (last.leader, last.epoch)
            if moved and state.leader is not None:
                out.append(state)
            last = state
        return out

    def replicas_of(self, log: str) -> tuple[str, ...]:
        """The log's replicas (every node when unknown)."""
        for state in self.logs:
            if state.log == log and state.replicas:
                return state.replicas
        return self.nodes


@dataclass(frozen=True)
class RunFacts:
    """What the configuration declares: the settings the trade-offs depend on."""

    acks: str = "all"
    flush: str = "never"
    enable_idempotence: bool = True
    unclean_leader_election: bool = False
    commit: str = "after"


@dataclass(frozen=True)
class Context:
    """Everything attribution reads besides the verdict."""

    times: Mapping[int, int]  # history index -> time (ns) for the indices evidence names
    faults: Sequence[Fault]
    cluster: ClusterTimeline
    facts: RunFacts
    # Client processes that crashed (an `info` completion) and when (ns).
    crashes: Sequence[tuple[int, int]] = ()
    # Sim ground truth: value -> nodes that ever appended it (None elsewhere).
    holders: Mapping[int, frozenset[str]] | None = None


# -- output -----------------------------------------------------------------------------


@dataclass
class Explanation:
    """The likely cause of the instances of one anomaly type on one log."""

    kind: str
    log: str | None
    count: int  # instances this explanation covers (of the evidence kept)
    cause: str  # one sentence
    tradeoff: str | None = None  # a TRADEOFF_TEXT key when a documented trade-off explains it
    explained: bool = False  # True only with a trade-off and evidence for every instance
    evidence: list[str] = field(default_factory=list)
    window: tuple[int, int] = (0, 0)  # ns, from the first write to the last observation
    nodes: list[str] = field(default_factory=list)  # the nodes whose logs matter

    def sentence(self) -> str:
        """`kind ×N on log: cause`, plus the trade-off when there is one."""
        where = f" on {self.log}" if self.log else ""
        text = f"{self.kind} ×{self.count}{where}: {self.cause}"
        if self.tradeoff:
            text += f" [{'explained' if self.explained else 'not fully explained'}: " \
                    f"{TRADEOFF_TEXT[self.tradeoff]}]"
        return text

    def to_json(self) -> dict[str, Any]:
        """As written into results.json's `explanations`."""
        return {"kind": self.kind, "log": self.log, "count": self.count, "cause": self.cause,
                "tradeoff": self.tradeoff, "explained": self.explained,
                "evidence": self.evidence, "window_ns": list(self.window),
                "nodes": self.nodes, "sentence": self.sentence()}


# -- helpers ----------------------------------------------------------------------------


def _s(ns: int) -> str:
    return f"{ns / 1e9:.1f} s"


def _groups(kind: str, items: Sequence[Mapping[str, Any]]
            ) -> dict[str | None, list[Mapping[str, Any]]]:
    out: dict[str | None, list[Mapping[str, Any]]] = {}
    for item in items:
        out.setdefault(item.get("log"), []).append(item)
    return out


def _window(items: Sequence[Mapping[str, Any]], ctx: Context) -> tuple[int, int]:
    times = [ctx.times[i] for item in items for i in item.get("indices", []) if i in ctx.times]
    return (min(times), max(times)) if times else (0, 0)


def _faults_in(ctx: Context, start: int, end: int,
              nodes: Iterable[str] | None = None) -> list[Fault]:
    wanted = None if nodes is None else set(nodes)
    return [f for f in ctx.faults if start <= f.time <= end and f.f not in ("stop-partition",)
            and (wanted is None or not f.nodes or wanted & set(f.nodes))]


def _describe_faults(faults: Sequence[Fault], limit: int = 4) -> str:
    parts = [f"{f.f} {','.join(f.nodes)} at {_s(f.time)}".replace("  ", " ")
             for f in faults[:limit]]
    if len(faults) > limit:
        parts.append(f"{len(faults) - limit} more")
    return "; ".join(parts)


def _unexplained(kind: str, log: str | None, items: Sequence[Mapping[str, Any]], ctx: Context,
                 lead: str = "") -> Explanation:
    start, end = _window(items, ctx)
    nodes = list(ctx.cluster.replicas_of(log)) if log else list(ctx.cluster.nodes)
    faults = _faults_in(ctx, start, end, nodes or None)
    state = ctx.cluster.state_at(log, start) if log else None
    parts = [lead] if lead else []
    if state is not None and state.leader:
        parts.append(f"{state.leader} led at {_s(start)}")
    if faults:
        parts.append(f"faults between {_s(start)} and {_s(end)}: {_describe_faults(faults)}")
    else:
        parts.append(f"no fault touched {log or 'the cluster'} between {_s(start)} and {_s(end)}")
    if log:
        changes = ctx.cluster.changes(log, start, end)
        if changes:
            parts.append("leaders since: " + ", ".join(
                f"{c.leader} (epoch {c.epoch}) at {_s(c.time)}" for c in changes[:3]))
    cause = "; ".join(parts) + " — no documented trade-off of this configuration explains it"
    return Explanation(kind, log, len(items), cause, window=(start, end), nodes=nodes)


def _values(items: Sequence[Mapping[str, Any]], *, first_only: bool = False) -> list[int]:
    out: list[int] = []
    for item in items:
        values = item.get("values") or []
        out.extend(values[:1] if first_only else values)
    return out


# -- one function per family ------------------------------------------------------------


def explain_loss(kind: str, items: Sequence[Mapping[str, Any]], ctx: Context) -> list[Explanation]:
    """Explanations of one loss-family type (`lost-write`, `inconsistent-offsets`,
    `lost-by-commit`, `unseen`), one per log.

    Tried in order, each explaining the log's instances only if its evidence covers
    every lost value: a power cut that took every lost value from the replicas' page
    cache (flush never); acks=0/1 with the acknowledging leader cut off or killed and
    replaced (and, in the sim, no other replica ever holding the values); an unclean
    election in the window; for lost-by-commit, commit-before with a crashed consumer.
    Otherwise the cause names the leader and the faults in the window, unexplained.
    """
    out = []
    for log, group in _groups(kind, items).items():
        out.append(_explain_loss_on(kind, log, group, ctx))
    return out


def _explain_loss_on(kind: str, log: str | None, items: Sequence[Mapping[str, Any]],
                     ctx: Context) -> Explanation:
    start, end = _window(items, ctx)
    facts, cluster = ctx.facts, ctx.cluster
    if kind == "unseen":
        # Never read by the end of the run: anything after the write may have taken it.
        end = max([end, *(f.time for f in ctx.faults), *(c.time for c in cluster.power_cuts)])
    nodes = list(cluster.replicas_of(log)) if log else list(cluster.nodes)
    # inconsistent-offsets lists every value seen at an offset; the lost one is among them.
    values = set(_values(items))
    if kind == "lost-by-commit" and facts.commit == "before":
        crashed = [c for c in ctx.crashes if start <= c[1] <= end]
        if crashed:
            return Explanation(
                kind, log, len(items),
                f"committed before processing (commit before); consumer process(es) "
                f"{', '.join(str(p) for p, _ in crashed[:3])} crashed at "
                f"{', '.join(_s(t) for _, t in crashed[:3])} after committing",
                COMMIT_BEFORE, True,
                [f"{len(crashed)} consumer crash(es) between {_s(start)} and {_s(end)}"],
                (start, end), nodes)
    if log is not None and values and facts.flush != "every":
        cuts = [c for c in cluster.power_cuts if c.time <= end and c.lost.get(log)]
        lost_by_cut = set().union(*(c.lost[log] for c in cuts)) if cuts else set()
        covered = values & lost_by_cut
        wanted = values if kind == "lost-write" else None
        if cuts and (covered == wanted if wanted is not None else covered):
            held_elsewhere = _held_outside(covered, {c.node for c in cuts}, ctx)
            who = ", ".join(f"{c.node} at {_s(c.time)}" for c in cuts)
            evidence = [f"every lost value ({len(covered)}) was in the un-fsynced page cache "
                        f"of each replica that lost power ({who}), after its last fsync"]
            cause = (f"acknowledged but never fsynced; power loss of {who} took them "
                     f"(flush {facts.flush})")
            if not held_elsewhere:
                if ctx.holders is not None:
                    evidence.append("no replica that kept power ever appended them")
                return Explanation(kind, log, len(items), cause, FLUSH_NEVER, True, evidence,
                                   (start, end), sorted({c.node for c in cuts}))
            # Replicas that kept them lose them only by following a leader that lost them
            # in a power cut and was elected anyway (Kafka keeps it in the ISR).
            led = _led_after_losing(log, cuts, held_elsewhere, end, cluster)
            if led is not None:
                cut_nodes = {c.node for c in cuts}
                keepers = sorted(set().union(*(ctx.holders.get(v, frozenset())
                                               for v in held_elsewhere)) - cut_nodes
                                 if ctx.holders else ())
                evidence.append(f"{led.leader}, which had lost them, was elected at "
                                f"{_s(led.time)} (epoch {led.epoch}); "
                                f"{', '.join(keepers) or 'the replicas'} that kept them "
                                "truncated to it")
                return Explanation(
                    kind, log, len(items),
                    f"{cause}; {led.leader} led again at {_s(led.time)} without them",
                    FLUSH_NEVER, True, evidence, (start, end),
                    sorted({c.node for c in cuts} | set(keepers)))
    if log is not None:
        changes = cluster.changes(log, start, end)
        unclean = [c for c in changes if c.unclean]
        if unclean:
            c = unclean[0]
            if facts.unclean_leader_election:
                return Explanation(
                    kind, log, len(items),
                    f"{c.leader} was elected from outside the ISR at {_s(c.time)} "
                    f"(epoch {c.epoch}, unclean: yes)", UNCLEAN, True,
                    [f"the ISR before the election did not include {c.leader}"],
                    (start, end), nodes)
            return _unexplained(kind, log, items, ctx,
                                f"{c.leader} was elected from outside the ISR at {_s(c.time)} "
                                "although unclean.leader.election.enable is off")
        acked_by = cluster.state_at(log, start)
        if facts.acks in ("0", "1") and acked_by is not None and acked_by.leader and changes:
            leader = acked_by.leader
            hit = [f for f in ctx.faults if f.f in _NODE_DOWN and leader in f.nodes
                   and f.time <= changes[0].time and f.time <= end]
            new = next((c for c in changes if c.leader != leader), None)
            if hit and new is not None:
                # Any instance acknowledged after the new leader took over is not this story.
                late = [i for i in items if ctx.times.get(i["indices"][0], 0) > new.time
                        and not _stale_leader(leader, log, ctx, ctx.times[i["indices"][0]])]
                elsewhere = _held_outside(values, {leader}, ctx) if kind == "lost-write" else set()
                cause = (f"acknowledged while {leader} led under acks={facts.acks}; "
                         f"{leader} was {_verb(hit[-1].f)} at {_s(hit[-1].time)} and "
                         f"{new.leader} elected at {_s(new.time)} "
                         f"(unclean: {'yes' if new.unclean else 'no'})")
                evidence = [f"every lost value was acknowledged by {leader} (epoch "
                            f"{acked_by.epoch}), which was then {_verb(hit[-1].f)} and "
                            "replaced"]
                if ctx.holders is not None:
                    evidence.append("no other replica ever appended them (never replicated)"
                                    if not elsewhere else
                                    f"{len(elsewhere)} of them reached another replica")
                ok = not late and not elsewhere
                return Explanation(kind, log, len(items), cause, ACKS, ok, evidence,
                                   (start, end), sorted({leader, new.leader or leader}))
    return _unexplained(kind, log, items, ctx)


def _led_after_losing(log: str, cuts: Sequence[PowerCut], values: set[int], end: int,
                      cluster: ClusterTimeline) -> LogState | None:
    """The first leader of `log`, elected after a power cut took `values` from it and
    before `end`, that had lost every one of them; None if there was none."""
    lost_at: dict[str, int] = {}
    for cut in cuts:
        if values <= cut.lost.get(log, frozenset()):
            lost_at.setdefault(cut.node, cut.time)
    for state in cluster.logs:
        if (state.log == log and state.leader in lost_at
                and lost_at[state.leader] < state.time <= end):
            return state
    return None


def _stale_leader(leader: str, log: str, ctx: Context, time: int) -> bool:
    """Whether `leader` was cut off (a stale leader still acknowledging) at `time`."""
    return any(f.f in _NODE_DOWN and leader in f.nodes and f.time <= time for f in ctx.faults)


def _held_outside(values: set[int], nodes: set[str], ctx: Context) -> set[int]:
    """Values some node outside `nodes` appended (sim ground truth; empty when unknown)."""
    if ctx.holders is None:
        return set()
    return {v for v in values if ctx.holders.get(v, frozenset()) - nodes}


def _verb(f: str) -> str:
    return {"start-partition": "isolated", "kill": "killed", "power-loss": "powered off",
            "pause": "paused"}.get(f, f)


def explain_duplication(kind: str, items: Sequence[Mapping[str, Any]],
                        ctx: Context) -> list[Explanation]:
    """Explanations of `duplicate`, one per log: with idempotence off, a fault that can
    lose a send's response (reset connections, partition, crash, pause, slow link) in the
    window of the duplicated sends explains it; with idempotence on nothing does."""
    out = []
    for log, group in _groups(kind, items).items():
        start, end = _window(group, ctx)
        faults = [f for f in ctx.faults
                  if f.f in _RETRY_CAUSES and start - 30 * 10**9 <= f.time <= end]
        if not ctx.facts.enable_idempotence and faults:
            out.append(Explanation(
                kind, log, len(group),
                f"sends retried after {_describe_faults(faults, 2)} were appended again "
                "(enable.idempotence off)", NO_IDEMPOTENCE, True,
                [f"{len(faults)} fault(s) that drop responses between {_s(start)} and "
                 f"{_s(end)}; the producer is not idempotent"], (start, end),
                list(ctx.cluster.replicas_of(log)) if log else []))
        else:
            lead = ("duplicated although the producer is idempotent"
                    if ctx.facts.enable_idempotence else "")
            out.append(_unexplained(kind, log, group, ctx, lead))
    return out


def explain_ordering(kind: str, items: Sequence[Mapping[str, Any]], ctx: Context,
                     losses: Sequence[Explanation] = ()) -> list[Explanation]:
    """Explanations of an ordering type, one per log: offsets that go back or skip on a
    log that lost acknowledged writes follow from that loss (offsets reused after a
    truncation) and are explained exactly when the loss is; otherwise unexplained."""
    out = []
    for log, group in _groups(kind, items).items():
        loss = next((e for e in losses if e.log == log and e.tradeoff), None)
        start, end = _window(group, ctx)
        changes = ctx.cluster.changes(log, start - 60 * 10**9, end) if log else []
        if loss is not None:
            out.append(Explanation(
                kind, log, len(group),
                f"follows from the {loss.kind} on {log} (offsets reused after the log was "
                f"truncated): {loss.cause}", loss.tradeoff, loss.explained,
                [f"same log as the {loss.kind}; {len(changes)} leader change(s) near it"],
                (start, end), loss.nodes))
        elif changes and ctx.facts.acks in ("0", "1"):
            c = changes[-1]
            out.append(Explanation(
                kind, log, len(group),
                f"offsets went back when {c.leader} took over at {_s(c.time)} (epoch "
                f"{c.epoch}) under acks={ctx.facts.acks}: the old leader's unreplicated "
                "suffix was truncated", ACKS, True,
                [f"leader change of {log} at {_s(c.time)} within the window"], (start, end),
                list(ctx.cluster.replicas_of(log)) if log else []))
        else:
            out.append(_unexplained(kind, log, group, ctx))
    return out


def explain_group(kind: str, items: Sequence[Mapping[str, Any]],
                  ctx: Context) -> list[Explanation]:
    """Explanations of `split-assignment` and `commit-regression`, one per log: a power
    loss of every broker before the observation, with flush never, explains them (the
    group coordinator's offsets and assignments were not fsynced); else unexplained."""
    out = []
    for log, group in _groups(kind, items).items():
        start, end = _window(group, ctx)
        cut_nodes = {c.node for c in ctx.cluster.power_cuts if c.time <= end}
        everyone = set(ctx.cluster.nodes)
        if ctx.facts.flush != "every" and everyone and everyone <= cut_nodes:
            last = max(c.time for c in ctx.cluster.power_cuts if c.time <= end)
            out.append(Explanation(
                kind, log, len(group),
                f"every broker lost power by {_s(last)} (flush {ctx.facts.flush}): the "
                "group coordinator's un-fsynced offsets and assignments were lost",
                FLUSH_NEVER, True,
                [f"power loss of {', '.join(sorted(cut_nodes))} before {_s(end)}"],
                (start, end), sorted(everyone)))
        else:
            out.append(_unexplained(kind, log, group, ctx))
    return out


def explain_phantom(kind: str, items: Sequence[Mapping[str, Any]],
                    ctx: Context) -> list[Explanation]:
    """Explanations of `aborted-read` and `precommitted-read`: no trade-off allows
    reading what was never written, so each is unexplained, with its window's faults."""
    return [_unexplained(kind, log, group, ctx) for log, group in _groups(kind, items).items()]


def explain(anomalies: Mapping[str, Sequence[Mapping[str, Any]]],
            ctx: Context) -> list[Explanation]:
    """Every explanation of a verdict's `anomalies` (type -> evidence), loss first so
    ordering anomalies can point at the loss they follow from."""
    out: list[Explanation] = []
    losses: list[Explanation] = []
    for kind, items in anomalies.items():
        if FAMILY_OF.get(kind) == "loss":
            found = explain_loss(kind, items, ctx)
            losses.extend(found)
            out.extend(found)
    for kind, items in anomalies.items():
        family = FAMILY_OF.get(kind)
        if family == "duplication":
            out.extend(explain_duplication(kind, items, ctx))
        elif family == "ordering":
            out.extend(explain_ordering(kind, items, ctx, losses))
        elif family == "group":
            out.extend(explain_group(kind, items, ctx))
        elif family == "phantom":
            out.extend(explain_phantom(kind, items, ctx))
    return out


def explained_types(explanations: Sequence[Explanation], counts: Mapping[str, int]) -> set[str]:
    """Anomaly types every instance of which a trade-off explains: each of its
    explanations is explained and they cover its exact count (capped evidence does not)."""
    out = set()
    for kind, count in counts.items():
        mine = [e for e in explanations if e.kind == kind]
        if mine and all(e.explained for e in mine) and sum(e.count for e in mine) == count:
            out.add(kind)
    return out
