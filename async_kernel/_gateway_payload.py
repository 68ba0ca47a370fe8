"""What the Enterprise Gateway launcher reports: its ports, and the payload that carries them.

The gateway gives the launcher a port range and an RSA public key (`--port-range`,
`--public-key`). `PortRange` picks free ports within the range; `encrypt_connection_info`
builds the payload the gateway decrypts (version 1): the connection info's JSON encrypted with
a fresh AES-128 key (ECB, PKCS#7 padding), that key encrypted with the gateway's public key
(RSA, PKCS#1 v1.5), and both in base64 inside a base64-encoded JSON object; `send_payload`
delivers it to the gateway's response address. The crypto is pycryptodomex's, as in the
gateway itself (the `gateway` extra).
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import random
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from Cryptodome.PublicKey.RSA import RsaKey

__all__ = (
    "PAYLOAD_VERSION",
    "LauncherError",
    "PortRange",
    "encrypt_connection_info",
    "load_public_key",
    "parse_address",
    "require_crypto",
    "send_payload",
)

PAYLOAD_VERSION = 1
"""The payload version the gateway reads (version 1: an RSA-wrapped AES key)."""

_EXTRA_HINT = "pip install 'async-kernel[gateway]'"


class LauncherError(RuntimeError):
    """The launcher cannot do its part (exit code 1); the message says what to do."""


@dataclass(frozen=True, slots=True)
class PortRange:
    """The ports the gateway allows (`--port-range LOW..HIGH`); equal bounds allow any port."""

    lower: int
    """The lowest port of the range."""
    upper: int
    """The highest port of the range."""

    @classmethod
    def parse(cls, text: str | None, *, min_size: int = 1000) -> PortRange:
        """Read `LOW..HIGH` (None or empty: no range), as the gateway writes it.

        Raises:
            ValueError: Not two port numbers, `HIGH` below `LOW`, or a range (other than a
                single port, no range at all) smaller than `min_size`.
        """
        if not text:
            return cls(0, 0)
        low, sep, high = text.partition("..")
        try:
            if not sep:
                raise ValueError
            lower, upper = int(low), int(high)
        except ValueError:
            msg = f"--port-range {text!r} is not LOW..HIGH, two port numbers (as 40000..41000)"
            raise ValueError(msg) from None
        if lower == upper:
            return cls(lower, upper)
        if not 1 <= lower < upper <= 65535:
            msg = f"--port-range {text!r} must have 1 <= LOW < HIGH <= 65535"
            raise ValueError(msg)
        if upper - lower < min_size:
            msg = (
                f"--port-range {text!r} holds {upper - lower} ports; the gateway requires at "
                f"least {min_size} (EG_MIN_PORT_RANGE_SIZE)"
            )
            raise ValueError(msg)
        return cls(lower, upper)

    @property
    def restricted(self) -> bool:
        """Whether ports must come from the range."""
        return self.lower != self.upper

    def bind(self, ip: str, *, retries: int) -> socket.socket:
        """Return a TCP socket bound on `ip` to a free port of the range (any, unrestricted).

        Raises:
            LauncherError: `retries + 1` random ports of the range were all taken.
        """
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        for _ in range(retries + 1 if self.restricted else 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            port = random.randint(self.lower, self.upper) if self.restricted else 0
            try:
                sock.bind((ip, port))
            except OSError as e:
                sock.close()
                if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                    msg = f"cannot bind a port on {ip}: {e.strerror or e}"
                    raise LauncherError(msg) from e
                continue
            return sock
        msg = (
            f"no free port in {self.lower}..{self.upper} on {ip} after {retries + 1} tries "
            "(EG_MAX_PORT_RANGE_RETRIES): widen the range or free some of its ports"
        )
        raise LauncherError(msg)


def require_crypto() -> None:
    """Check that pycryptodomex can be imported.

    Raises:
        LauncherError: It cannot; the message names the extra that installs it.
    """
    try:
        import Cryptodome  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        msg = (
            "the Enterprise Gateway launcher encrypts the connection info with pycryptodomex, "
            f"which is not installed: {_EXTRA_HINT}"
        )
        raise LauncherError(msg) from None


def load_public_key(text: str) -> RsaKey:
    """Read the gateway's RSA public key: base64 DER (the PEM body, as the gateway passes it).

    Raises:
        LauncherError: pycryptodomex is not installed.
        ValueError: Not base64, not an RSA public key, a private key, or under 1024 bits.
    """
    require_crypto()
    from Cryptodome.PublicKey import RSA

    text = text.strip()
    try:
        pem = text.startswith("-----BEGIN")
        raw = text.encode() if pem else base64.b64decode(text, validate=True)
    except (binascii.Error, UnicodeEncodeError):
        msg = "--public-key is not base64 (the gateway passes the body of a PEM public key)"
        raise ValueError(msg) from None
    try:
        key = RSA.import_key(raw)
    except (ValueError, IndexError, TypeError):
        msg = f"--public-key is not an RSA public key ({len(raw)} bytes that do not parse as one)"
        raise ValueError(msg) from None
    if key.has_private():
        msg = "--public-key holds a private key: pass the gateway's public key"
        raise ValueError(msg)
    if key.size_in_bits() < 1024:
        msg = f"--public-key is a {key.size_in_bits()}-bit RSA key: at least 1024 bits are needed"
        raise ValueError(msg)
    return key


def encrypt_connection_info(info: Mapping[str, Any], public_key: RsaKey) -> bytes:
    """Return the payload the gateway decrypts (`PAYLOAD_VERSION`), base64 as it is sent.

    Raises:
        LauncherError: pycryptodomex is not installed.
    """
    require_crypto()
    from Cryptodome.Cipher import AES, PKCS1_v1_5
    from Cryptodome.Random import get_random_bytes
    from Cryptodome.Util.Padding import pad

    aes_key = get_random_bytes(16)
    # ECB because the gateway decrypts ECB: the payload's format is the gateway's, not ours.
    body = AES.new(aes_key, AES.MODE_ECB).encrypt(pad(json.dumps(info).encode(), 16))
    wrapped = PKCS1_v1_5.new(public_key).encrypt(aes_key)
    payload = {
        "version": PAYLOAD_VERSION,
        "key": base64.b64encode(wrapped).decode(),
        "conn_info": base64.b64encode(body).decode(),
    }
    return base64.b64encode(json.dumps(payload).encode())


def parse_address(text: str) -> tuple[str, int]:
    """Read the gateway's `--response-address HOST:PORT` (an IPv6 host may be in brackets).

    Raises:
        ValueError: Not a host and a port number.
    """
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        msg = f"--response-address {text!r} is not HOST:PORT"
        raise ValueError(msg)
    return host, int(port)


def send_payload(payload: bytes, address: tuple[str, int], timeout: float) -> None:
    """Connect to the response address, send `payload` and close (the gateway reads to EOF).

    Raises:
        LauncherError: No connection, or none within `timeout` seconds.
    """
    host, port = address
    try:
        with socket.create_connection(address, timeout=timeout) as conn:
            conn.sendall(payload)
    except TimeoutError:
        msg = f"the response address {host}:{port} did not answer within {timeout:g} s"
        raise LauncherError(msg) from None
    except OSError as e:
        msg = f"cannot send the connection info to the response address {host}:{port}: {e}"
        raise LauncherError(msg) from e
