"""Connection files: where the kernel's sockets live and the key that signs its messages."""

from __future__ import annotations

import os
import pathlib
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from async_kernel._enums import Channel
from async_kernel.wire._curve import CurveKeys, curve_keys_from
from async_kernel.wire._session import signature_digest

__all__ = (
    "ConnectionFileError",
    "ConnectionInfo",
    "read_connection_file",
    "write_connection_file",
)

_PORT_KEYS = {
    Channel.shell: "shell_port",
    Channel.control: "control_port",
    Channel.stdin: "stdin_port",
    Channel.iopub: "iopub_port",
    Channel.heartbeat: "hb_port",
}


class ConnectionFileError(ValueError):
    """A connection file that cannot be used: unreadable, not a JSON object, or a bad value."""


@dataclass(slots=True)
class ConnectionInfo:
    """The contents of a connection file."""

    ip: str = "127.0.0.1"
    """The address (tcp) or path prefix (ipc) of the sockets."""
    transport: Literal["tcp", "ipc"] = "tcp"
    """`tcp`, or `ipc` for Unix domain sockets."""
    key: bytes = b""
    """The HMAC key; empty disables signing."""
    signature_scheme: str = "hmac-sha256"
    """The signing scheme, `hmac-<hashlib algorithm>`."""
    ports: dict[Channel, int] = field(default_factory=dict[Channel, int])
    """The port of each socket; 0 means pick a free one when binding."""
    kernel_name: str = ""
    """The kernelspec name, when the launcher recorded it."""
    curve: CurveKeys | None = None
    """The CurveZMQ key pair (`curve_publickey`, `curve_secretkey`): every socket is encrypted."""
    key_generated: bool = field(default=False, compare=False)
    """The file had no `key`: `key` is a random one, so no client that read the file can talk."""

    def url(self, channel: Channel, port: int | str | None = None) -> str:
        """Return the zmq endpoint of `channel` (with `port` instead of the recorded one).

        `port` may be `"*"` (tcp: any free port). An IPv6 address is written in brackets.
        """
        port = self.ports.get(channel, 0) if port is None else port
        if self.transport == "ipc":
            return f"ipc://{self.ip}-{port}"
        host = f"[{self.ip}]" if ":" in self.ip and not self.ip.startswith("[") else self.ip
        return f"tcp://{host}:{port}"

    def to_dict(self) -> dict[str, Any]:
        """Return the connection file's JSON object."""
        data: dict[str, Any] = {key: self.ports.get(ch, 0) for ch, key in _PORT_KEYS.items()}
        data |= {
            "ip": self.ip,
            "transport": self.transport,
            "key": self.key.decode(),
            "signature_scheme": self.signature_scheme,
            "kernel_name": self.kernel_name,
        }
        if self.curve is not None:
            data |= self.curve.to_dict()
        return data


def read_connection_file(path: str | os.PathLike[str]) -> ConnectionInfo:
    """Read a connection file.

    A file without `key` (or with `"key": null`) fails closed: the kernel signs with a random
    key that nobody knows, and `key_generated` says so. `"key": ""` disables signing, as in
    jupyter_client.

    Raises:
        ConnectionFileError: The file cannot be read, is not a JSON object, or holds a value
            that cannot be used (transport, signature scheme, key, ports, Curve keys).
    """
    try:
        data = orjson.loads(pathlib.Path(path).read_bytes())
    except OSError as e:
        msg = f"cannot read the connection file {path}: {e.strerror or e}"
        raise ConnectionFileError(msg) from e
    except orjson.JSONDecodeError as e:
        msg = f"{path}: the connection file is not JSON: {e}"
        raise ConnectionFileError(msg) from None
    if not isinstance(data, dict):
        msg = f"{path}: a connection file must hold a JSON object"
        raise ConnectionFileError(msg)
    transport = data.get("transport", "tcp")
    if transport not in ("tcp", "ipc"):
        msg = f"{path}: unknown transport {transport!r} (use 'tcp' or 'ipc')"
        raise ConnectionFileError(msg)
    scheme = data.get("signature_scheme", "hmac-sha256")
    try:
        if not isinstance(scheme, str):
            msg = f"the signature scheme must be a string, not {scheme!r}"
            raise ValueError(msg)
        signature_digest(scheme)
    except ValueError as e:
        raise ConnectionFileError(f"{path}: {e}") from None
    key = data.get("key")
    if key is not None and not isinstance(key, str):
        msg = f"{path}: the key must be a string, not {type(key).__name__}"
        raise ConnectionFileError(msg)
    ports: dict[Channel, int] = {}
    for channel, name in _PORT_KEYS.items():
        port = data.get(name) or 0
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            msg = f"{path}: {name} must be a port number (0 to choose one), not {port!r}"
            raise ConnectionFileError(msg)
        ports[channel] = port
    try:
        curve = curve_keys_from(data)
    except ValueError as e:
        raise ConnectionFileError(f"{path}: {e}") from None
    return ConnectionInfo(
        ip=str(data.get("ip", "127.0.0.1")),
        transport=transport,
        key=secrets.token_hex(32).encode() if key is None else key.encode(),
        signature_scheme=scheme,
        ports=ports,
        kernel_name=str(data.get("kernel_name", "")),
        curve=curve,
        key_generated=key is None,
    )


def write_connection_file(path: str | os.PathLike[str], info: ConnectionInfo) -> None:
    """Write `info` to `path`, readable by the owner only from the first byte.

    The JSON goes to a new file in the same directory, created with mode 0600 (whatever the
    umask), which then replaces `path` in one step: the key is never readable by others, and a
    reader polling `path` never sees half a file.
    """
    target = pathlib.Path(path)
    data = orjson.dumps(info.to_dict(), option=orjson.OPT_INDENT_2)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
