"""Bounded decompression of a v2 batch's records section, for every codec Kafka has.

The leader decompresses a compressed batch once to walk its records (see
`record_validator`); nothing decompressed is stored. Output is always bounded by a
limit the caller passes: a batch header or a codec preamble may claim any size, and
a few kilobytes of zstd or gzip can expand to gigabytes, so no buffer larger than the
limit (plus one byte, to tell "exactly at the limit" from "over it") is ever made.

Codecs, as Kafka's `CompressionType` writes them:

- gzip (1): a gzip stream (members may be concatenated, as GZIPInputStream reads them);
  decoded with the standard library's zlib.
- snappy (2): the xerial framing Kafka's Java client writes (a 16-byte header, then
  blocks of int32 length + raw snappy), or one raw snappy block, which librdkafka
  writes and xerial's reader accepts.
- lz4 (3): the LZ4 frame format (Kafka's KafkaLZ4BlockOutputStream).
- zstd (4): zstd frames.

snappy, lz4 and zstd come from `cramjam` (a declared dependency). Where it is missing
those codecs raise UnsupportedCompressionTypeError rather than being stored unchecked.
"""

from __future__ import annotations

import struct
import zlib
from types import ModuleType

from reference_broker.errors import (
    InvalidRecordError,
    MessageTooLargeError,
    UnsupportedCompressionTypeError,
)

try:
    import cramjam as _cramjam
except ImportError:  # pragma: no cover - cramjam is a dependency of the distribution
    _cramjam = None  # type: ignore[assignment]

GZIP = 1
SNAPPY = 2
LZ4 = 3
ZSTD = 4
CODEC_NAMES = ("none", "gzip", "snappy", "lz4", "zstd")

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER_SIZE = 16
_INT32 = struct.Struct(">i")
# First output buffer for codecs without a stated size: a few times the input, as
# record data rarely compresses better; it doubles up to the limit when it does.
_FIRST_GUESS_FACTOR = 8
_FIRST_GUESS_MIN = 256 * 1024
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
# cramjam's error when the output buffer is too small for what the stream holds.
_BUFFER_FULL = "whole buffer"


def decompress(codec: int, payload: bytes | memoryview, limit: int) -> bytes | bytearray:
    """The decompressed records section of a batch compressed with `codec`.

    Raises InvalidRecordError when `payload` is not a valid stream of the codec
    (Kafka's reader fails on such a batch too), MessageTooLargeError when it holds
    more than `limit` bytes, UnsupportedCompressionTypeError for a codec this broker
    cannot decode.
    """
    name = CODEC_NAMES[codec] if 0 < codec < len(CODEC_NAMES) else f"id {codec}"
    if codec == GZIP:
        return _gunzip(payload, limit)
    if codec not in (SNAPPY, LZ4, ZSTD):
        raise InvalidRecordError(f"unknown compression codec {name}")
    if _cramjam is None:
        raise UnsupportedCompressionTypeError(
            f"this broker cannot decode {name} batches: the cramjam package is not installed"
        )
    try:
        if codec == SNAPPY:
            return _unsnappy(_cramjam.snappy, payload, limit)
        module = _cramjam.lz4 if codec == LZ4 else _cramjam.zstd
        return _into_growing_buffer(module, payload, limit, name)
    except _cramjam.DecompressionError as exc:
        raise InvalidRecordError(f"{name} records section cannot be decompressed: {exc}") from None


def _too_large(name: str, limit: int) -> MessageTooLargeError:
    return MessageTooLargeError(
        f"{name} batch decompresses to more than {limit} bytes, the most this broker "
        "decompresses for one batch; send smaller batches"
    )


def _gunzip(payload: bytes | memoryview, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    data = bytes(payload)
    if not data:
        raise InvalidRecordError("gzip records section is empty")
    try:
        while data:
            d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out = d.decompress(data, limit + 1 - total)
            total += len(out)
            parts.append(out)
            if total > limit or d.unconsumed_tail:
                raise _too_large("gzip", limit)
            if not d.eof:
                raise InvalidRecordError("gzip records section ends before its stream does")
            data = d.unused_data  # another member follows, as GZIPInputStream reads on
    except zlib.error as exc:
        raise InvalidRecordError(f"gzip records section cannot be decompressed: {exc}") from None
    return b"".join(parts)


def _unsnappy(snappy: ModuleType, payload: bytes | memoryview, limit: int) -> bytes:
    data = bytes(payload)
    if not data.startswith(_XERIAL_MAGIC):
        return _raw_snappy_block(snappy, data, limit)
    if len(data) < _XERIAL_HEADER_SIZE:
        raise InvalidRecordError("snappy records section ends inside its xerial header")
    parts: list[bytes] = []
    total = 0
    pos = _XERIAL_HEADER_SIZE
    while pos < len(data):
        if pos + 4 > len(data):
            raise InvalidRecordError("snappy records section ends inside a block length")
        (size,) = _INT32.unpack_from(data, pos)
        pos += 4
        if size < 0 or pos + size > len(data):
            raise InvalidRecordError(
                f"snappy block of {size} bytes at byte {pos} runs past the records section"
            )
        block = _raw_snappy_block(snappy, data[pos : pos + size], limit - total)
        total += len(block)
        parts.append(block)
        pos += size
    return b"".join(parts)


def _raw_snappy_block(snappy: ModuleType, block: bytes, limit: int) -> bytes:
    # A raw snappy block states its decompressed length up front: check it before
    # letting the decoder allocate that much.
    size = snappy.decompress_raw_len(block)
    if size > limit:
        raise _too_large("snappy", limit)
    return bytes(snappy.decompress_raw(block))


def _frame_content_size(codec: int, data: bytes) -> int | None:
    """The decompressed size a zstd or lz4 frame header states, when it states one.

    librdkafka writes it; streaming compressors (the Java client's) may not. It is a
    claim: the decoder still stops at the buffer's end, and checks the claim itself.
    """
    if codec == ZSTD and len(data) >= 6 and data[:4] == _ZSTD_MAGIC:
        descriptor = data[4]
        fcs_flag = descriptor >> 6
        single_segment = descriptor >> 5 & 1
        pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
        size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
        if size == 0 or len(data) < pos + size:
            return None
        value = int.from_bytes(data[pos : pos + size], "little")
        return value + 256 if size == 2 else value
    if codec == LZ4 and len(data) >= 15 and data[:4] == _LZ4_MAGIC and data[4] & 0x08:
        return int.from_bytes(data[6:14], "little")
    return None


def _into_growing_buffer(
    module: ModuleType, payload: bytes | memoryview, limit: int, name: str
) -> bytearray:
    data = bytes(payload)
    stated = _frame_content_size(LZ4 if module is _cramjam.lz4 else ZSTD, data)
    if stated is not None and stated > limit:
        raise _too_large(name, limit)
    if stated is not None:
        size = stated + 1  # one more byte shows whether more than stated follows
    else:
        size = min(limit + 1, max(len(data) * _FIRST_GUESS_FACTOR, _FIRST_GUESS_MIN))
    while True:
        out = bytearray(size)
        try:
            written = module.decompress_into(data, out)
        except Exception as exc:
            if _BUFFER_FULL not in str(exc):
                raise
            if size > limit:
                raise _too_large(name, limit) from None
            size = min(limit + 1, size * 2)
            continue
        if written > limit:
            raise _too_large(name, limit)
        del out[written:]
        return out
