"""Nemeses: fault injection over the sim and process runtimes.

- `nemesis.target`: the `FaultTarget` protocol a runtime implements.
- `nemesis.grudge`: partition shapes as grudges, built with networkx.
- `nemesis.ops`: faults as data — `FaultOp`s and the `Schedule`, JSON round-trippable.
- `nemesis.packages`: the package names `--nemesis` accepts.
- `nemesis.generate`: (packages, duration, interval, seed) -> `Schedule`.
- `nemesis.roles`: `Role` targets (leader, followers, controller, coordinator, minorities)
  resolved when a fault starts.
- `nemesis.composites`: composite packages, timed scenarios of role-aimed faults.
- `nemesis.executor`: `execute(schedule, target, history)` on trio's clock.
"""

from nemesis.executor import Executor, execute
from nemesis.generate import generate
from nemesis.ops import Schedule, ScheduleError

__all__ = ["Executor", "Schedule", "ScheduleError", "execute", "generate"]
