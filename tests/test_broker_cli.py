"""`faultline broker` as a real process: port 0, config errors, clean SIGTERM, config files."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.broker_process import running_broker, start_broker


def _produce_and_count(bootstrap: str, topic: str, n: int) -> int:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(n):
        producer.send(topic, value=str(i).encode())
    producer.flush(30)
    producer.close()
    return _count(bootstrap, topic)


def _count(bootstrap: str, topic: str) -> int:
    """Records readable from the start of every partition up to the end offsets."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(partitions)
    ends = consumer.end_offsets(partitions)
    count = 0
    while any(consumer.position(tp) < ends[tp] for tp in partitions):
        count += sum(len(batch) for batch in consumer.poll(timeout_ms=500).values())
    consumer.close()
    assert count == sum(ends.values())
    return count


def test_port_zero_is_reported_and_sigterm_exits_zero_keeping_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    broker = start_broker(data_dir, settings={"num.partitions": 2}, log_path=tmp_path / "1.log")
    try:
        assert broker.port > 0
        assert _produce_and_count(broker.bootstrap, "kept", 25) == 25
    finally:
        code = broker.terminate()
    assert code == 0
    log = (tmp_path / "1.log").read_text()
    assert "received SIGTERM" in log and "Traceback" not in log
    with running_broker(data_dir, log_path=tmp_path / "2.log") as again:
        assert _count(again.bootstrap, "kept") == 25


def test_ctrl_c_shuts_down_cleanly(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "node", log_path=tmp_path / "b.log")
    broker.process.send_signal(signal.SIGINT)
    assert broker.process.wait(timeout=20) == 0


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "broker", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unknown_config_key_is_a_clear_error_with_exit_code_2(tmp_path: Path) -> None:
    result = _run_cli("--data-dir", str(tmp_path), "--set", "log.retention.msec=5")
    assert result.returncode == 2
    assert "unknown broker config 'log.retention.msec'" in result.stderr


def test_bad_config_value_is_a_clear_error_with_exit_code_2(tmp_path: Path) -> None:
    result = _run_cli("--data-dir", str(tmp_path), "--set", "num.partitions=many")
    assert result.returncode == 2
    assert "num.partitions" in result.stderr


def test_help_config_lists_kafka_names() -> None:
    result = _run_cli("--data-dir", "unused", "--help-config")
    assert result.returncode == 0
    for name in ("log.flush.interval.messages", "socket.request.max.bytes", "node.id"):
        assert name in result.stdout
    assert "faultline.storage.volatile.until.fsync" in result.stdout


def test_config_file_settings_apply_and_set_overrides_them(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text('num.partitions = 4\n"auto.create.topics.enable" = true\n')
    cmd = [sys.executable, "-m", "harness.cli", "broker", "--data-dir", str(tmp_path / "d")]
    cmd += ["--listen", "127.0.0.1:0", "--config", str(config), "--set", "num.partitions=5"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:")
        bootstrap = line.split("listening on ", 1)[1].strip()
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bootstrap)
        assert len(producer.partitions_for("fresh")) == 5
        producer.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


@pytest.mark.parametrize(("volatile", "survivors"), [("true", 0), ("false", 5)])
def test_volatile_storage_setting_makes_sigkill_lose_unflushed_writes(
    tmp_path: Path, volatile: str, survivors: int
) -> None:
    # No flush policy: acknowledged writes are in the page cache (survive SIGKILL) or, with
    # the faultline setting, only in process memory (lost, as in a power cut).
    settings = {"faultline.storage.volatile.until.fsync": volatile}
    broker = start_broker(tmp_path / "n", settings=settings, log_path=tmp_path / "a.log")
    try:
        assert _produce_and_count(broker.bootstrap, "t", 5) == 5
    finally:
        broker.kill()
    with running_broker(tmp_path / "n", settings=settings, log_path=tmp_path / "b.log") as again:
        assert _count(again.bootstrap, "t") == survivors


def test_periodic_flusher_makes_writes_durable_after_flush_interval(tmp_path: Path) -> None:
    # Volatile storage loses everything not fsynced on SIGKILL; the flusher's flush.ms tick
    # is the only thing that can have fsynced these writes.
    settings = {"faultline.storage.volatile.until.fsync": "true", "log.flush.interval.ms": 100}
    broker = start_broker(tmp_path / "n", settings=settings, log_path=tmp_path / "a.log")
    try:
        assert _produce_and_count(broker.bootstrap, "t", 5) == 5
        time.sleep(1.0)  # several flush.ms periods
    finally:
        broker.kill()
    with running_broker(tmp_path / "n", settings=settings, log_path=tmp_path / "b.log") as again:
        assert _count(again.bootstrap, "t") == 5


def test_port_in_use_is_a_clear_error_with_exit_code_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_cli("--data-dir", str(tmp_path), "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert "Address already in use" in result.stderr and "Traceback" not in result.stderr


def test_data_dir_of_another_node_is_refused_with_exit_code_2(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "n", log_path=tmp_path / "a.log")
    assert broker.terminate() == 0
    result = _run_cli(
        "--data-dir", str(tmp_path / "n"), "--listen", "127.0.0.1:0", "--set", "node.id=7"
    )
    assert result.returncode == 2
    assert "node.id=0" in result.stderr and "node.id=7" in result.stderr
