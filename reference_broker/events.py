"""One structured log line per interesting state change, for whoever reads the broker's log.

A test harness measures which code paths a run drove the broker through (its coverage
of the fault space) by reading these lines from the node logs; the broker knows
nothing of that reader. Each line goes through the logger `faultline.broker.events`
at INFO and has a short fixed grammar:

    event=<kind> key=value key=value ...

`kind` and every key are lowercase words with dashes; values never contain spaces
(they are replaced by `_`). Kinds emitted, with the code site that emits each:

- `isr-shrink`, `isr-expand` (leader partition: its ISR lost / gained members, by its
  own AlterPartition or by the controller), `by=leader|controller`;
- `truncation-below-hw`, `follower-truncation` (a follower cut its log; below its high
  watermark or not);
- `leader-epoch-fenced` (a produce or fetch named an older leader epoch than the
  leader's; once per partition and stale epoch);
- `broker-fenced` (the active controller fenced a broker: session timeout or its
  controlled shutdown), `unclean-election` (the controller elected a leader from
  outside the ISR and ELR);
- `coordinator-load` (this node took over a `__consumer_offsets` partition),
  `rebalance` (a group moved to a new generation), `stale-generation` (a member's
  commit, heartbeat or sync named an old generation);
- `producer-fenced` (a batch came with an older producer epoch than the partition's);
- `recovery-truncation` (log recovery after an unclean shutdown cut bytes or found
  offsets it once held missing).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("faultline.broker.events")


def emit(kind: str, **fields: object) -> None:
    """Log one event line `event=<kind> key=value ...` (keys in the order given)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    parts = [f"event={kind}"]
    for key, value in fields.items():
        text = str(value).replace(" ", "_") if value is not None else "-"
        parts.append(f"{key.replace('_', '-')}={text}")
    logger.info("%s", " ".join(parts))
