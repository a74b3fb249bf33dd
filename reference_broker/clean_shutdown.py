"""The clean-shutdown marker: proof, on the next start, that the node stopped cleanly.

A broker that stops cleanly (its logs flushed and closed) writes `.kafka_cleanshutdown`
in its data directory, holding the broker epoch it had, in Kafka's format
(CleanShutdownFileHandler): `{"version":0,"brokerEpoch":<epoch>}`. The next start
reads it and deletes it before doing anything else, so a crash of that incarnation
leaves no marker behind. Registration offers the epoch back to the controller
(BrokerRegistration's PreviousBrokerEpoch), which treats a restart without the
matching epoch as unclean: that replica may have lost unflushed records (KIP-966).

Whatever cannot be read as a marker counts as no marker (-1): an unproven clean
shutdown must be taken as unclean, as Kafka's reader does.
"""

from __future__ import annotations

import logging

import msgspec

from .env import Storage

logger = logging.getLogger("faultline.broker")

CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
NO_PREVIOUS_EPOCH = -1
_VERSION = 0


class _Marker(msgspec.Struct, forbid_unknown_fields=False):
    version: int
    brokerEpoch: int  # Kafka's JSON field name


async def take_previous_broker_epoch(storage: Storage) -> int:
    """The broker epoch the marker names (-1 without a readable marker), the marker
    durably removed so that it proves only the shutdown that wrote it."""
    if not storage.exists(CLEAN_SHUTDOWN_FILE):
        return NO_PREVIOUS_EPOCH
    handle = storage.open(CLEAN_SHUTDOWN_FILE, create=False)
    try:
        data = handle.read(0, handle.size())
    finally:
        handle.close()
    storage.remove(CLEAN_SHUTDOWN_FILE)
    await storage.fsync_dir("")
    try:
        marker = msgspec.json.decode(data, type=_Marker)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        logger.warning(
            "ignoring unreadable %s (%s): taking the last shutdown as unclean",
            CLEAN_SHUTDOWN_FILE,
            exc,
        )
        return NO_PREVIOUS_EPOCH
    if marker.version != _VERSION or marker.brokerEpoch < 0:
        logger.warning(
            "ignoring %s of version %d with epoch %d: taking the last shutdown as unclean",
            CLEAN_SHUTDOWN_FILE,
            marker.version,
            marker.brokerEpoch,
        )
        return NO_PREVIOUS_EPOCH
    return marker.brokerEpoch


async def mark_clean_shutdown(storage: Storage, broker_epoch: int) -> None:
    """Durably record that this node stopped cleanly with `broker_epoch`."""
    tmp = f"{CLEAN_SHUTDOWN_FILE}.tmp"
    handle = storage.open(tmp, create=True)
    try:
        handle.truncate(0)
        handle.append(msgspec.json.encode(_Marker(_VERSION, broker_epoch)))
        await handle.fsync()
    finally:
        handle.close()
    storage.rename(tmp, CLEAN_SHUTDOWN_FILE)
    await storage.fsync_dir("")
