"""Runtimes: where a faultline cluster runs (DESIGN.md §2).

- `harness.runtime.sim`: every broker and client in one deterministic `trio.run`
  with a MockClock, an in-memory network and an in-memory disk;
- `harness.runtime.process`: each broker a real OS process behind a fault proxy.

Both implement `nemesis.target.FaultTarget`, so one nemesis breaks either.
"""
