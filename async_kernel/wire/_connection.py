"""Connection files: where the kernel's sockets live and the key that signs its messages.

Also registration files (the JEP 66 handshake): where a kernel that picks its own ports
reports them.
"""

from __future__ import annotations

import ipaddress
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
    "RegistrationInfo",
    "read_connection_file",
    "read_registration_file",
    "read_startup_file",
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


@dataclass(frozen=True, slots=True)
class RegistrationInfo:
    """The contents of a registration file: the JEP 66 handshake (protocol 5.6).

    The kernel binds its five sockets on ports of its own choosing and reports them to the
    registration socket at `url()`, signed with `key`.
    """

    kernel_id: str
    """Names the kernel to the registrar; sent back with the ports."""
    registration_ip: str
    """The registrar's address (tcp), or its path prefix (ipc)."""
    registration_port: int
    """The registrar's port (tcp), or its path suffix (ipc)."""
    transport: Literal["tcp", "ipc"] = "tcp"
    """`tcp`, or `ipc` for Unix domain sockets: the registrar's and the kernel's."""
    key: bytes = b""
    """The HMAC key: of the registration message, its acknowledgement, and the kernel's messages."""
    signature_scheme: str = "hmac-sha256"
    """The signing scheme, `hmac-<hashlib algorithm>`."""
    ip: str = ""
    """Where the kernel binds: the file's `ip`, else chosen by `bind_ip`."""
    curve: CurveKeys | None = None
    """CurveZMQ keys for the kernel's sockets, if the file has them (as a connection file)."""
    key_generated: bool = field(default=False, compare=False)
    """The file had no `key` (see `ConnectionInfo.key_generated`)."""

    def url(self) -> str:
        """Return the zmq endpoint of the registration socket."""
        info = ConnectionInfo(ip=self.registration_ip, transport=self.transport)
        return info.url(Channel.shell, self.registration_port)

    def bind_ip(self) -> str:
        """Where the kernel's sockets are bound.

        The file's `ip` when it has one. Otherwise, with a registrar on a loopback address,
        that address (nothing outside this host needs the kernel); with a registrar elsewhere,
        every interface (`0.0.0.0`, or `::` for IPv6), since the registrar reaches the kernel
        by the host address it launched it on. For ipc, the registrar's path prefix.
        """
        if self.ip or self.transport == "ipc":
            return self.ip or self.registration_ip
        host = "127.0.0.1" if self.registration_ip == "localhost" else self.registration_ip
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # a host name: reached from elsewhere
            return "0.0.0.0"
        if address.is_loopback:
            return host
        return "::" if address.version == 6 else "0.0.0.0"

    def connection(self) -> ConnectionInfo:
        """Return the connection info to bind with: every port 0, chosen when binding."""
        return ConnectionInfo(
            ip=self.bind_ip(),
            transport=self.transport,
            key=self.key,
            signature_scheme=self.signature_scheme,
            ports=dict.fromkeys(_PORT_KEYS, 0),
            curve=self.curve,
            key_generated=self.key_generated,
        )


def _load(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(pathlib.Path(path).read_bytes())
    except OSError as e:
        msg = f"cannot read the {what} {path}: {e.strerror or e}"
        raise ConnectionFileError(msg) from e
    except orjson.JSONDecodeError as e:
        msg = f"{path}: the {what} is not JSON (half written?): {e}"
        raise ConnectionFileError(msg) from None
    if not isinstance(data, dict):
        msg = f"{path}: a {what} must hold a JSON object"
        raise ConnectionFileError(msg)
    return data


def _port(data: dict[str, Any], name: str, path: object, *, zero: bool = True) -> int:
    port = data.get(name) or 0
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        msg = f"{path}: {name} must be a port number (0 to choose one), not {port!r}"
        raise ConnectionFileError(msg)
    if not zero and port == 0:
        msg = f"{path}: {name} must be given (a port number from 1 to 65535)"
        raise ConnectionFileError(msg)
    return port


def _security(
    data: dict[str, Any], path: object
) -> tuple[Literal["tcp", "ipc"], str, str | None, CurveKeys | None]:
    """The fields connection and registration files share: transport, scheme, key, Curve keys."""
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
        curve = curve_keys_from(data)
    except ValueError as e:
        raise ConnectionFileError(f"{path}: {e}") from None
    key = data.get("key")
    if key is not None and not isinstance(key, str):
        msg = f"{path}: the key must be a string, not {type(key).__name__}"
        raise ConnectionFileError(msg)
    return transport, scheme, key, curve


def _connection_info(data: dict[str, Any], path: object) -> ConnectionInfo:
    transport, scheme, key, curve = _security(data, path)
    ports = {channel: _port(data, name, path) for channel, name in _PORT_KEYS.items()}
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


def _registration_info(data: dict[str, Any], path: object) -> RegistrationInfo:
    transport, scheme, key, curve = _security(data, path)
    kernel_id = data.get("kernel_id")
    if not isinstance(kernel_id, str) or not kernel_id:
        msg = f"{path}: a registration file needs a kernel_id (a non-empty string)"
        raise ConnectionFileError(msg)
    registration_ip = data.get("registration_ip", "127.0.0.1")
    ip = data.get("ip", "")
    for name, value in (("registration_ip", registration_ip), ("ip", ip)):
        if not isinstance(value, str):
            msg = f"{path}: {name} must be a string, not {value!r}"
            raise ConnectionFileError(msg)
    return RegistrationInfo(
        kernel_id=kernel_id,
        registration_ip=registration_ip,
        registration_port=_port(data, "registration_port", path, zero=False),
        transport=transport,
        key=secrets.token_hex(32).encode() if key is None else key.encode(),
        signature_scheme=scheme,
        ip=ip,
        curve=curve,
        key_generated=key is None,
    )


def read_connection_file(path: str | os.PathLike[str]) -> ConnectionInfo:
    """Read a connection file.

    A file without `key` (or with `"key": null`) fails closed: the kernel signs with a random
    key that nobody knows, and `key_generated` says so. `"key": ""` disables signing, as in
    jupyter_client. `curve_publickey` and `curve_secretkey` (both, or neither) turn on CurveZMQ.

    Raises:
        ConnectionFileError: The file cannot be read, is not a JSON object, or holds a value
            that cannot be used (transport, signature scheme, key, ports, Curve keys).
    """
    return _connection_info(_load(path, "connection file"), path)


def read_registration_file(path: str | os.PathLike[str]) -> RegistrationInfo:
    """Read a registration file (the JEP 66 handshake): where to report the kernel's ports.

    Raises:
        ConnectionFileError: The file cannot be read, is not a JSON object, lacks
            `kernel_id` or `registration_port`, or holds a value that cannot be used.
    """
    return _registration_info(_load(path, "registration file"), path)


def read_startup_file(path: str | os.PathLike[str]) -> ConnectionInfo | RegistrationInfo:
    """Read the file a kernel is started with: a connection file, or a registration file.

    A launcher passes either one in the same place (`-f {connection_file}`); a file with
    `registration_port` is a registration file.

    Raises:
        ConnectionFileError: The file cannot be used (see the two readers).
    """
    data = _load(path, "connection file")
    if "registration_port" in data:
        return _registration_info(data, path)
    return _connection_info(data, path)


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
