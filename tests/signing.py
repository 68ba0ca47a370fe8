"""Signed frames for session tests, computed independently of the code under test."""

from __future__ import annotations

import hashlib
import hmac

from async_kernel.wire._frames import DELIMITER

__all__ = ("KEY", "hex_hmac", "signed")

KEY = b"a-test-key-0123456789"
"""The key of the sessions under test."""


def hex_hmac(key: bytes, *parts: bytes) -> bytes:
    """The protocol's signature (HMAC-SHA256, hex) of `parts`."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.hexdigest().encode()


def signed(
    key: bytes, header: bytes, parent: bytes, metadata: bytes, content: bytes
) -> list[bytes]:
    """Frames with a valid signature around arbitrary (possibly broken) JSON frames."""
    parts = [header, parent, metadata, content]
    return [DELIMITER, hex_hmac(key, *parts) if key else b"", *parts]
