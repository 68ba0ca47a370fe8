"""What IPython does when a kernel starts: the profile, its extensions, startup files, exec_lines.

ipykernel's application is an IPython `InteractiveShellApp`; users rely on what that does at
start: the profile's `startup/*.py` and `*.ipy` files and `$PYTHONSTARTUP` run in the user
namespace, `InteractiveShellApp.extensions` (and the default `storemagic`) are loaded,
`exec_lines` and `exec_files` run, and `matplotlib`/`gui` are enabled. `KernelStartup` is
IPython's own `InteractiveShellApp` bound to the kernel's shell, so every one of those settings
means what it means in IPython; settings written for ipykernel's `IPKernelApp` section apply too.

The profile's config files (`ipython_config.py`, `ipython_kernel_config.py`) are read by the
command line (`async_kernel.cli.load_config`), beneath the kernel's own config files.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.profiledir import ProfileDir, ProfileDirError
from IPython.core.shellapp import InteractiveShellApp
from traitlets.config import Config

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ("KernelStartup", "ProfileNotFoundError", "profile_dir")

log = logging.getLogger("async_kernel")

_IPYKERNEL_SECTION = "IPKernelApp"


class ProfileNotFoundError(LookupError):
    """A profile other than `default` was asked for and does not exist."""


def profile_dir(name: str, ipython_dir: str | None = None) -> ProfileDir:
    """Return the IPython profile directory `name`, creating `default` if it is missing.

    Args:
        name: The profile's name (`default` unless `--profile` says otherwise).
        ipython_dir: The IPython directory; `$IPYTHONDIR` or `~/.ipython` by default.

    Raises:
        ProfileNotFoundError: `name` is not `default` and has no directory.
    """
    from IPython.paths import get_ipython_dir

    where = ipython_dir or get_ipython_dir()
    try:
        return ProfileDir.find_profile_dir_by_name(where, name)
    except ProfileDirError:
        if name != "default":
            msg = (
                f"IPython profile {name!r} not found in {where} "
                f"(create it with `ipython profile create {name}`)"
            )
            raise ProfileNotFoundError(msg) from None
        return ProfileDir.create_profile_dir_by_name(where, name)


def _with_ipykernel_section(config: Config) -> Config:
    """Return `config` with its `IPKernelApp` start-up settings applied to `KernelStartup` too."""
    section: Any = config.get(_IPYKERNEL_SECTION)
    if not section:
        return config
    own = {k: v for k, v in section.items() if k in InteractiveShellApp.class_trait_names()}
    if not own:
        return config
    merged = Config(config)
    # IPKernelApp is more specific than InteractiveShellApp; KernelStartup's own section wins.
    ours = config.get(KernelStartup.__name__, {})
    merged.merge(Config({KernelStartup.__name__: {**own, **ours}}))
    return merged


class KernelStartup(InteractiveShellApp):
    """IPython's start-up steps for the kernel's shell (`InteractiveShellApp` settings)."""

    def __init__(self, shell: InteractiveShell, config: Config) -> None:
        """Bind the steps to `shell`, configured by `config` (`InteractiveShellApp` and alike).

        Args:
            shell: The kernel's shell; its profile directory holds the startup files.
            config: The kernel's configuration.
        """
        super().__init__(config=_with_ipykernel_section(config), shell=shell)
        self.log: logging.Logger = log
        self.profile_dir: ProfileDir = shell.profile_dir  # pyright: ignore[reportAttributeAccessIssue]
        self.ipython_dir: str = str(Path(self.profile_dir.location).parent)
        self.extra_args: list[str] = []  # a file runs with `sys.argv == [its path]`

    def init_shell(self) -> None:
        """Nothing to make: the kernel made the shell."""

    def run(self) -> None:
        """Enable matplotlib or a GUI, load the extensions, then run the startup code.

        As in IPython, a failing step is reported and the kernel starts anyway; a startup file
        that raises ends the startup files (those after it do not run). No cell is there to
        show a traceback in, so tracebacks go to the kernel's log.
        """
        shell: Any = self.shell
        shell.showtraceback = _log_traceback  # an instance attribute over the shell's method
        try:
            self.init_gui_pylab()
            self.init_extensions()
            self.init_code()
        finally:
            del shell.showtraceback
            for stream in (sys.stdout, sys.stderr):
                stream.flush()


def _log_traceback(*_args: object, **_kwargs: object) -> None:
    """Log the exception being handled (stands in for `showtraceback` during start-up)."""
    log.error("during IPython's start-up:\n%s", traceback.format_exc().rstrip())
