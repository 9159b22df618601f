"""``Content-Encoding`` of request bodies: gzip and deflate are decompressed, within the body limit.

Large transaction Bundles compress well, and a client that sends ``Content-Encoding: gzip``
used to have its compressed bytes parsed as JSON (a confusing 400). Decompressing is the
friendlier answer, but a zip bomb (a few KB that inflate to gigabytes) must not cost more
than a plain body could: output is produced in bounded steps and the *decompressed* size counts
against ``GATEWAY_MAX_BODY_BYTES`` (413 the moment it passes). Other codings (br, zstd,
compress, several stacked) are 415 naming what is accepted.
"""
from __future__ import annotations

import zlib

from gateway.errors import MalformedBody, PayloadTooLarge, UnsupportedMediaType

SUPPORTED = ("gzip", "deflate")
_STEP = 256 * 1024  # output produced per decompress call


def decode_body(raw: bytes, coding: str | None, limit: int) -> bytes:
    """The body as sent before its ``Content-Encoding`` (``coding``: the header's value)."""
    coding = (coding or "").strip().lower()
    if coding in ("", "identity"):
        return raw
    if coding in ("gzip", "x-gzip"):
        return _inflate(raw, zlib.MAX_WBITS | 16, "gzip", limit)
    if coding == "deflate":  # RFC 9110: the zlib format; some clients send raw deflate
        try:
            return _inflate(raw, zlib.MAX_WBITS, "deflate", limit)
        except MalformedBody:
            return _inflate(raw, -zlib.MAX_WBITS, "deflate", limit)
    raise UnsupportedMediaType(f"Content-Encoding '{coding[:40]}' is not supported; send the body "
                               f"uncompressed or with one of: {', '.join(SUPPORTED)}.")


def _inflate(raw: bytes, wbits: int, name: str, limit: int) -> bytes:
    out = bytearray()
    data = raw
    if not data:
        return b""
    while True:  # gzip allows several members one after another
        inflater = zlib.decompressobj(wbits)
        try:
            while data:
                out += inflater.decompress(data, _STEP)
                if len(out) > limit:
                    raise PayloadTooLarge(f"The body decompresses to more than the limit of {limit} bytes "
                                          "(GATEWAY_MAX_BODY_BYTES).")
                data = inflater.unconsumed_tail
            out += inflater.flush()
        except zlib.error:
            raise MalformedBody(f"The body is not valid {name} data, as its Content-Encoding says.") from None
        if len(out) > limit:
            raise PayloadTooLarge(f"The body decompresses to more than the limit of {limit} bytes "
                                  "(GATEWAY_MAX_BODY_BYTES).")
        if not inflater.eof:
            raise MalformedBody(f"The {name} body is truncated.")
        data = inflater.unused_data
        if not data:
            return bytes(out)
        if wbits != zlib.MAX_WBITS | 16:
            raise MalformedBody(f"There are bytes after the end of the {name} data.")
