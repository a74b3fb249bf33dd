"""The harness side of attribution: read a run folder's timelines, call the pure
`checkers.attribution.explain`, and separate explained anomalies from unexplained ones.

Inputs: the history (nemesis events, the times of the indices the evidence names,
client crashes), `cluster.jsonl` when the target recorded one (the sim), the run's
configuration and, in the sim, the ground truth of which node appended each value.

A run declares the documented trade-offs acceptable with `--accept-tradeoffs`
(`RunConfig.accept_tradeoffs`): then anomaly types every instance of which a trade-off
explains no longer fail the run, and only unexplained ones do. Without it the verdict
is the checker's, and the explanations only say why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from checkers.anomalies import UNCERTAIN
from checkers.attribution import (
    TRADEOFF_TEXT,
    ClusterTimeline,
    Context,
    Explanation,
    Fault,
    RunFacts,
    explain,
    explained_types,
)
from checkers.verdict import Verdict
from history.model import NemesisEvent
from history.reader import HistoryReader

if TYPE_CHECKING:
    from harness.oracle import GroundTruth
    from harness.run_config import RunConfig

CLUSTER_TIMELINE = "cluster.jsonl"


def read_cluster_timeline(run_dir: Path) -> ClusterTimeline:
    """The run's cluster.jsonl, or an empty (unrecorded) timeline when there is none."""
    path = run_dir / CLUSTER_TIMELINE
    if not path.exists():
        return ClusterTimeline()
    with open(path, encoding="utf-8") as stream:
        return ClusterTimeline.from_lines(json.loads(line) for line in stream if line.strip())


def build_context(history_path: Path, verdict: Verdict, facts: RunFacts,
                  cluster: ClusterTimeline, truth: GroundTruth | None = None) -> Context:
    """Everything `explain` needs besides the evidence, in one pass over the history."""
    wanted: set[int] = {i for items in verdict["anomalies"].values()
                        for item in items for i in item.get("indices", [])}
    times: dict[int, int] = {}
    faults: list[Fault] = []
    crashes: list[tuple[int, int]] = []
    for event, _invoke in HistoryReader(str(history_path)):
        if event.index in wanted:
            times[event.index] = event.time
        if isinstance(event, NemesisEvent):
            faults.append(Fault.from_event(event.index, event.time, event.f, event.value))
        elif event.type == "info" and isinstance(event.process, int):
            crashes.append((event.process, event.time))
    holders = None
    if truth is not None:
        values = {v for kind in ("lost-write", "inconsistent-offsets")
                  for item in verdict["anomalies"].get(kind, []) for v in item.get("values", [])}
        holders = {v: frozenset(s.node for s in truth.where(v)) for v in values}
    return Context(times, faults, cluster, facts, crashes, holders)


def facts_of(config: RunConfig) -> RunFacts:
    """The configuration's trade-off settings."""
    return RunFacts(acks=str(config.acks), flush=config.flush.strip().lower(),
                    enable_idempotence=config.enable_idempotence,
                    unclean_leader_election=config.unclean_leader_election,
                    commit=str(config.commit))


def attribute(run_dir: Path, verdict: Verdict, config: RunConfig,
              truth: GroundTruth | None = None) -> list[Explanation]:
    """The explanations of a finished run's anomalies."""
    if not verdict["counts"]:
        return []
    context = build_context(run_dir / "history.jsonl", verdict, facts_of(config),
                            read_cluster_timeline(run_dir), truth)
    return explain(verdict["anomalies"], context)


def separate(verdict: Verdict, explanations: Sequence[Explanation], *,
             accept_tradeoffs: bool) -> dict[str, Any]:
    """results.json's `explanations` section: each explanation, the anomaly types the
    trade-offs explain and those they do not, and the verdict that follows.

    With `accept_tradeoffs`, `valid` counts only unexplained types outside the allowed
    set; otherwise it is the checker's own.
    """
    counts = verdict["counts"]
    explained = explained_types(explanations, counts)
    bad = verdict["bad_anomaly_types"]
    unexplained = [kind for kind in bad if kind not in explained]
    valid: bool | str = verdict["valid"]
    if accept_tradeoffs:
        if any(kind not in UNCERTAIN for kind in unexplained):
            valid = False
        elif unexplained:
            valid = "unknown"
        else:
            valid = True
    return {
        "accept_tradeoffs": accept_tradeoffs,
        "explained_types": sorted(explained),
        "unexplained_types": unexplained,
        "valid": valid,
        "items": [e.to_json() for e in explanations],
        "note": ("only unexplained anomalies fail this run (--accept-tradeoffs)"
                 if accept_tradeoffs else
                 "explained anomalies still fail this run; --accept-tradeoffs accepts "
                 "the configuration's documented trade-offs"),
    }


def cause_lines(section: Mapping[str, Any]) -> list[str]:
    """The console's lines under the table: one likely cause per anomaly type (its
    largest log's, with the other logs counted), then each trade-off named once."""
    items = section.get("items") or []
    if not items:
        return []
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        by_kind.setdefault(item["kind"], []).append(item)
    lines = ["likely causes:"]
    tradeoffs: list[str] = []
    for kind, mine in by_kind.items():
        top = max(mine, key=lambda item: item["count"])
        logs = [item["log"] for item in mine if item["log"]]
        where = f" on {', '.join(logs)}" if logs else ""
        state = "explained" if all(item["explained"] for item in mine) else "UNEXPLAINED"
        tag = f"{state}: {top['tradeoff']}" if top["tradeoff"] else state
        others = f" (on {top['log']}; likewise elsewhere)" if len(mine) > 1 else ""
        lines.append(f"  {kind} ×{sum(item['count'] for item in mine)}{where}: "
                     f"{top['cause']}{others} [{tag}]")
        tradeoffs += [item["tradeoff"] for item in mine
                      if item["tradeoff"] and item["tradeoff"] not in tradeoffs]
    lines += [f"  {name}: {TRADEOFF_TEXT[name]}" for name in dict.fromkeys(tradeoffs)]
    explained, unexplained = section["explained_types"], section["unexplained_types"]
    if explained:
        lines.append(f"explained by documented trade-offs: {', '.join(explained)}")
    if unexplained:
        lines.append(f"unexplained: {', '.join(unexplained)}")
    return lines
