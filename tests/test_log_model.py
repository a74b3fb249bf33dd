"""Random appends, truncations, flushes, power cuts and restarts against a plain model.

The model is a list of batches (base offset, values). After every step the log must
serve exactly the model: the same records at the same offsets, from any offset.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_broker.log import LogConfig, PartitionLog
from reference_broker.log.record_batch import iter_batches
from reference_broker.os_env import OsStorage
from tests.test_log_partition import ManualClock
from tests.test_log_record_batch import build_batch, decode

CONFIG = LogConfig(segment_bytes=700, index_interval_bytes=150)


@dataclass
class Model:
    batches: list[tuple[int, list[bytes]]] = field(default_factory=list)
    # Offsets below this were handed out before a power cut took their batches: recovery
    # retires them (a gap) rather than handing them out again.
    retired: int = 0

    @property
    def leo(self) -> int:
        if not self.batches:
            return self.retired
        base, values = self.batches[-1]
        return max(base + len(values), self.retired)

    def records(self) -> list[tuple[int, bytes]]:
        return [(base + i, v) for base, values in self.batches for i, v in enumerate(values)]

    def truncate_to(self, offset: int) -> None:
        # A batch containing `offset` goes whole, as in Kafka.
        self.batches = [(b, v) for b, v in self.batches if b + len(v) - 1 < offset]


appends = st.tuples(st.just("append"), st.lists(st.integers(1, 4), min_size=1, max_size=3))
operations = st.lists(
    st.one_of(
        appends,
        appends,
        appends,
        st.tuples(st.just("truncate"), st.integers(0, 10_000)),
        st.tuples(st.just("flush"), st.none()),
        st.tuples(st.just("power_cut"), st.none()),
        st.tuples(st.just("restart"), st.none()),
    ),
    max_size=40,
)


def check(log: PartitionLog, model: Model, probe: int) -> None:
    assert log.log_end_offset == model.leo
    expected = model.records()
    got: list[tuple[int, bytes]] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        read = log.read(offset, 300).records
        batches = [header for header, _ in iter_batches(read)]
        assert batches and batches[0].base_offset <= offset
        # Batches with no records hold retired offsets; readers move past them.
        got.extend(r for r in decode(read) if r[0] >= offset)
        offset = batches[-1].last_offset + 1
    assert got == expected
    if expected:
        target = expected[probe % len(expected)][0]
        first = decode(log.read(target, 1).records)
        assert first[0][0] <= target <= first[-1][0]
        assert dict(first)[target] == dict(expected)[target]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations, probe=st.integers(0, 1000))
async def test_log_matches_model_through_truncations_crashes_and_restarts(
    ops: list[tuple[str, object]], probe: int
) -> None:
    root = Path(tempfile.mkdtemp(prefix="faultline-model-"))
    try:
        storage = OsStorage(root, volatile_until_fsync=True)
        log = PartitionLog.open(storage, "m-0", CONFIG, ManualClock())
        model = Model()
        durable = Model()
        counter = 0
        for name, arg in ops:
            if name == "append":
                sizes = arg
                assert isinstance(sizes, list)
                data = b""
                base = model.leo
                for size in sizes:
                    values = [b"v%d" % (counter + i) for i in range(size)]
                    counter += size
                    data += build_batch(values)
                    model.batches.append((base, values))
                    base += size
                log.append_as_leader(data, leader_epoch=0)
            elif name == "truncate":
                assert isinstance(arg, int)
                offset = arg % (model.leo + 2)
                log.truncate_to(offset)
                model.truncate_to(offset)
                model.retired = min(model.retired, offset)
                # A truncation is only as durable as the next flush; make it so to keep
                # the durable image well defined for a later power cut.
                await log.flush()
                durable = Model(list(model.batches))
            elif name == "flush":
                await log.flush()
                durable = Model(list(model.batches))
            elif name == "power_cut":
                # A segment file's name survives the cut (its creation was synced): the
                # offsets below its base were handed out.
                names = [p.name for p in (root / "m-0").glob("*.log")]
                handed_out = max((int(n.split(".")[0]) for n in names), default=0)
                storage = OsStorage(root, volatile_until_fsync=True)
                log = PartitionLog.open(storage, "m-0", CONFIG, ManualClock())
                model = Model(list(durable.batches), max(model.retired, handed_out))
            elif name == "restart":
                await log.close()
                storage = OsStorage(root, volatile_until_fsync=True)
                log = PartitionLog.open(storage, "m-0", CONFIG, ManualClock())
                durable = Model(list(model.batches))
            check(log, model, probe)
    finally:
        shutil.rmtree(root, ignore_errors=True)
