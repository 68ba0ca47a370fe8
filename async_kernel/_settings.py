"""The kernel's settings: traits that `--Kernel.name=value`, config files and code can set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from traitlets import Bool, CaselessStrEnum, Float, Unicode, UseEnum
from traitlets.config import SingletonConfigurable

from async_kernel._enums import KernelConcurrencyMode
from async_kernel.output._comm import CommPolicy
from async_kernel.output._routing import ThreadParentPolicy

if TYPE_CHECKING:
    from async_kernel._enums import Backend

__all__ = ("KernelSettings",)


class KernelSettings(SingletonConfigurable):
    """The configurable settings of a `Kernel` (its base class)."""

    connection_file = Unicode("", help="The connection file written by the launcher.").tag(
        config=True
    )
    """Path of the connection file."""
    registration_file = Unicode(
        "", help="A registration file (JEP 66): report the kernel's own ports to a registrar."
    ).tag(config=True)
    """Path of a registration file; `-f` can also name one (it has `registration_port`)."""
    registration_timeout = Float(
        10.0, help="Seconds to wait for the registrar's acknowledgement (JEP 66)."
    ).tag(config=True)
    """How long the handshake waits before the kernel gives up and exits."""
    backend: Backend = CaselessStrEnum(  # pyright: ignore[reportAssignmentType]
        ["asyncio", "trio"], default_value="asyncio", help="The async library of the event loops."
    ).tag(config=True)
    """`asyncio` or `trio`: the event loop that runs cells and top-level await."""
    concurrency_mode = UseEnum(
        KernelConcurrencyMode,
        default_value=KernelConcurrencyMode.default,
        help="`default` runs requests concurrently; `blocking` one at a time, like ipykernel.",
    ).tag(config=True)
    """The kernel-wide run-mode policy; can be changed while the kernel runs."""
    thread_parent_policy = UseEnum(
        ThreadParentPolicy,
        default_value=ThreadParentPolicy.latest,
        help="Where output of plain threads goes: `latest` cell, or the `starter` cell.",
    ).tag(config=True)
    """Where output from plain threads goes (see `ThreadParentPolicy`)."""
    comm_policy = UseEnum(
        CommPolicy,
        default_value=CommPolicy.owner,
        help="Which thread runs comm handlers: the comm's `owner` (also inside its cells' "
        "time.sleep), `owner_idle` (never inside a cell), or where a message `arrival`es.",
    ).tag(config=True)
    """Which thread runs comm handlers, for comms and targets without a policy of their own."""
    capture_fd_output = Bool(True, help="Capture output written to file descriptors 1 and 2.").tag(
        config=True
    )
    """Capture output of C code, `os.system` and subprocesses."""
    flush_interval = Float(0.1, help="Seconds between flushes of buffered stream output.").tag(
        config=True
    )
    """How long stream output is gathered before it is sent."""
    switch_interval = Float(
        0.0002, help="sys.setswitchinterval for the kernel process (seconds)."
    ).tag(config=True)
    """How often a busy thread hands the GIL over; short, so the socket thread keeps up."""
    shutdown_grace = Float(
        3.0, help="Seconds a shutdown waits for interrupted code to end before exiting anyway."
    ).tag(config=True)
    """How long a shutdown (or SIGTERM, or the launcher's death) waits for running code."""
    profile = Unicode(
        "default", help="The IPython profile: its startup files, extensions and history."
    ).tag(config=True)
    """The IPython profile (`async-kernel start --profile NAME` also reads its config files)."""
    trim_memory = Bool(
        True, help="Return freed memory to the system when the kernel is quiet after a burst."
    ).tag(config=True)
    """Ask the C allocator (glibc) to give back free memory after 500 requests and a 1 s lull."""
    log_level = CaselessStrEnum(
        ["DEBUG", "INFO", "WARNING", "ERROR"], default_value="WARNING", help="Log level."
    ).tag(config=True)
    """The level of the kernel's own log (written to the original stderr)."""
