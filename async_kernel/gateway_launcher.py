"""Enterprise Gateway's kernel launcher for async-kernel: `python -m async_kernel.gateway_launcher`.

Enterprise Gateway starts a remote kernel (in a Kubernetes pod, a YARN container, on another
host) by running the launcher that its kernelspec names, and then waits for the launcher to
report back. This launcher keeps the contract of Enterprise Gateway's own Python launcher:

1. It takes `--kernel-id ID`, `--response-address HOST:PORT`, `--public-key KEY` and
   `--port-range LOW..HIGH`, also spelled `--RemoteProcessProxy.kernel-id` and so on as the
   gateway's kernelspecs pass them (`0..0` means no range).
2. It picks five free ports in the range, writes a connection file (`ip` 0.0.0.0 unless `--ip`
   says otherwise, a fresh key) and opens a *comm port* in the range too.
3. It sends the connection info, with its `pid`, `pgid`, `comm_port` and `kernel_id`, to the
   response address: the JSON is AES-encrypted (a fresh 16-byte key, ECB, PKCS#7 padding), the
   AES key is RSA-encrypted with the gateway's public key (PKCS#1 v1.5), and the gateway gets
   base64 of `{"version": 1, "key": ..., "conn_info": ...}` with both fields in base64.
4. It starts the kernel, `python -m async_kernel start -f CONNECTION_FILE`, as its child (in
   the launcher's process group), and serves the comm port until the kernel has exited: signals are
   forwarded to the kernel (SIGINT interrupts the running cells), a shutdown request stops it
   (see `async_kernel._gateway_listener`). Then it removes the connection file and exits
   with the kernel's exit code.

Arguments of the form `--Class.trait=value` go on to the kernel. Bad arguments exit with code
2; a missing `pycryptodomex` (the `gateway` extra), no free port in the range, or a response
address that cannot be reached exit with code 1, within `--response-timeout` seconds at most.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from async_kernel._enums import Channel
from async_kernel._gateway_listener import CommListener
from async_kernel._gateway_payload import (
    PAYLOAD_VERSION,
    LauncherError,
    PortRange,
    encrypt_connection_info,
    load_public_key,
    parse_address,
    require_crypto,
    send_payload,
)
from async_kernel.kernelspec import runtime_dir
from async_kernel.wire._connection import ConnectionInfo, write_connection_file

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

    from Cryptodome.PublicKey.RSA import RsaKey

__all__ = (
    "PAYLOAD_VERSION",
    "LauncherError",
    "PortRange",
    "build_parser",
    "encrypt_connection_info",
    "load_public_key",
    "main",
)

log = logging.getLogger("async_kernel.gateway_launcher")

_PROG = "python -m async_kernel.gateway_launcher"
_SETTING_RE = re.compile(r"--[A-Za-z_]\w*\.[A-Za-z_]\w*=.*", re.DOTALL)
# What the gateway's kernelspecs may pass and this launcher has no use for: the stock
# launcher's kernel class (its default names ipykernel's) and its Spark or Dask set-up.
_KERNEL_CLASSES = frozenset({"ipykernel.ipkernel.IPythonKernel", "async_kernel.Kernel"})
_CHANNELS = (Channel.shell, Channel.iopub, Channel.stdin, Channel.heartbeat, Channel.control)


# --- the command ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the launcher's argument parser (the gateway's spellings included)."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Start async-kernel for Enterprise Gateway and report it to the gateway.",
        allow_abbrev=False,
    )

    def both(name: str, **kwargs: Any) -> None:
        parser.add_argument(f"--{name}", f"--RemoteProcessProxy.{name}", **kwargs)

    both("kernel-id", dest="kernel_id", required=True, help="the gateway's id of the kernel")
    both("response-address", dest="response_address", required=True, metavar="HOST:PORT")
    both("public-key", dest="public_key", required=True, help="the gateway's RSA public key")
    both("port-range", dest="port_range", default="", metavar="LOW..HIGH")
    both("spark-context-initialization-mode", dest="spark_mode", default="none")
    both("cluster-type", dest="cluster_type", default="none")
    parser.add_argument("--kernel-class-name", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ip", default="0.0.0.0", help="where the kernel listens (0.0.0.0)")
    parser.add_argument("--response-timeout", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("connection_file", nargs="?", help="where to write the connection file")
    return parser


@dataclass(frozen=True, slots=True)
class _Plan:
    kernel_id: str
    response: tuple[str, int]
    public_key: RsaKey
    ports: PortRange
    ip: str
    connection_file: Path
    settings: list[str]
    response_timeout: float
    shutdown_timeout: float


def _env_int(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return default


def _plan(parser: argparse.ArgumentParser, args: argparse.Namespace, rest: list[str]) -> _Plan:
    """Check every argument before anything is bound or written (usage errors exit 2)."""
    unknown = [arg for arg in rest if not _SETTING_RE.fullmatch(arg)]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not args.kernel_id.strip():
        parser.error("--kernel-id is empty")
    if args.spark_mode not in ("none", "") or args.cluster_type not in ("none", "spark", ""):
        parser.error("async-kernel starts no Spark or Dask context: drop those arguments")
    if args.kernel_class_name and args.kernel_class_name not in _KERNEL_CLASSES:
        name = args.kernel_class_name
        parser.error(f"--kernel-class-name {name}: this launcher starts async-kernel's Kernel")
    require_crypto()
    min_size = _env_int("MIN_PORT_RANGE_SIZE", "EG_MIN_PORT_RANGE_SIZE", default=1000)
    try:
        ipaddress.ip_address(args.ip)
    except ValueError:
        parser.error(f"--ip {args.ip!r} is not an IP address")
    if not args.response_timeout > 0 or not args.shutdown_timeout >= 0:
        parser.error("--response-timeout must be positive and --shutdown-timeout not negative")
    try:
        ports = PortRange.parse(args.port_range, min_size=min_size)
        response = parse_address(args.response_address)
        public_key = load_public_key(args.public_key)
    except ValueError as e:
        parser.error(str(e))
    given = Path(args.connection_file) if args.connection_file else None
    if given is None or not given.parent.is_dir():
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", args.kernel_id)
        given = runtime_dir() / f"kernel-{safe}.json"
    return _Plan(
        kernel_id=args.kernel_id,
        response=response,
        public_key=public_key,
        ports=ports,
        ip=args.ip,
        connection_file=given,
        settings=rest,
        response_timeout=args.response_timeout,
        shutdown_timeout=args.shutdown_timeout,
    )


class _Terminated(Exception):
    """SIGTERM before the kernel started: the launcher cleans up and exits."""


def _launch(plan: _Plan) -> int:
    retries = _env_int("MAX_PORT_RANGE_RETRIES", "EG_MAX_PORT_RANGE_RETRIES", default=5)
    kernel: subprocess.Popen[bytes] | None = None
    listener: CommListener | None = None

    def on_term(signum: int, frame: FrameType | None) -> None:
        if listener is None:
            raise _Terminated
        listener.signal(signal.SIGTERM)  # the kernel stops cleanly; the launcher follows it

    # SIGINT reaches the kernel itself (forwarded, or sent to the whole process group); the
    # launcher goes on. Python handlers, not SIG_IGN: the kernel must not inherit an ignore.
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, lambda signum, frame: None),
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
    }
    reserved: list[socket.socket] = []
    try:
        for _ in range(len(_CHANNELS) + 1):  # one by one: `finally` closes those bound so far
            reserved.append(plan.ports.bind(plan.ip, retries=retries))  # noqa: PERF401
        comm = reserved.pop()
        comm.listen(16)
        ports = {ch: sock.getsockname()[1] for ch, sock in zip(_CHANNELS, reserved, strict=True)}
        info = ConnectionInfo(ip=plan.ip, key=str(uuid.uuid4()).encode(), ports=ports)
        plan.connection_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_connection_file(plan.connection_file, info)
        report = info.to_dict() | {
            "pid": os.getpid(),
            "pgid": os.getpgid(0),
            "comm_port": comm.getsockname()[1],
            "kernel_id": plan.kernel_id,
        }
        log.info("ports %s, comm port %d", sorted(ports.values()), report["comm_port"])
        payload = encrypt_connection_info(report, plan.public_key)
        send_payload(payload, plan.response, plan.response_timeout)
        for sock in reserved:  # freed just before the kernel binds them (exactly, or it exits 1)
            sock.close()
        reserved = [comm]
        # The kernel's launcher watch follows this process, not whatever the gateway's
        # environment named.
        env = os.environ | {"JPY_PARENT_PID": str(os.getpid())}
        command = [sys.executable, "-m", "async_kernel", "start", "-f", str(plan.connection_file)]
        kernel = subprocess.Popen([*command, *plan.settings], env=env)
        listener = CommListener(comm, kernel, shutdown_timeout=plan.shutdown_timeout)
        code = listener.serve()
        log.info("the kernel exited with code %d", code)
        return code if code >= 0 else 128 - code
    except _Terminated:
        return 128 + signal.SIGTERM
    finally:
        for sock in reserved:
            sock.close()
        if kernel is not None and kernel.poll() is None:  # an error while it ran
            kernel.kill()
            kernel.wait()
        plan.connection_file.unlink(missing_ok=True)
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler from outside Python, left as it is
                signal.signal(signum, handler)


def _configure_logging() -> None:
    level = os.environ.get("EG_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "INFO"
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"))
    log.addHandler(handler)
    log.propagate = False
    try:
        log.setLevel(int(level) if level.isdigit() else level.upper())
    except ValueError:
        log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher with `argv` (the command line by default); return the exit code."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        plan = _plan(parser, args, rest)
        _configure_logging()
        return _launch(plan)
    except LauncherError as e:
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
