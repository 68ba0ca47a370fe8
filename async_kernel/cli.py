"""The `async-kernel` command: install, remove and list kernel specs, and start the kernel.

```text
async-kernel install [--name N] [--display-name D] [--user | --sys-prefix | --prefix P]
                     [--backend asyncio|trio] [--interrupt-mode signal|message]
                     [--Class.trait=value ...]
async-kernel uninstall [--name N] [--user | --sys-prefix | --prefix P]
async-kernel list
async-kernel start -f CONNECTION_FILE [--Class.trait=value ...]
async-kernel start --registration-file REGISTRATION_FILE [-f CONNECTION_FILE] [...]
```

`start` ignores positional arguments (with a warning on stderr), as ipykernel does: Jupyter
passes some frontends' arguments on to the kernel (`jupyter run script.py`).

`python -m async_kernel` is the same command. Exit codes: 0 on success, 1 when the work fails
(a missing spec, an unwritable directory, a broken config or connection file), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from async_kernel import kernelspec
from async_kernel._version import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

    from traitlets.config import Config

__all__ = (
    "CONFIG_FILE_NAME",
    "ConfigFileError",
    "build_parser",
    "config_dirs",
    "load_config",
    "main",
)

CONFIG_FILE_NAME = "async_kernel_config"
"""The base name of the config files read by `start` (`.py` and `.json`)."""
_IPYTHON_CONFIG_FILE_NAMES = ("ipython_config", "ipython_kernel_config")

_SETTING_RE = re.compile(r"--[A-Za-z_]\w*\.[A-Za-z_]\w*=.*", re.DOTALL)
_WITH_SETTINGS = frozenset({"install", "start"})


class ConfigFileError(RuntimeError):
    """A config file exists but cannot be loaded."""


# --- configuration -------------------------------------------------------------------------


def config_dirs() -> list[Path]:
    """Return the Jupyter config directories, the strongest first.

    Each entry of `$JUPYTER_CONFIG_PATH`, then the user's directory (`$JUPYTER_CONFIG_DIR`, by
    default `~/.jupyter`), then `sys.prefix/etc/jupyter`.
    """
    env = os.environ
    dirs = [Path(entry) for entry in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if entry]
    dirs.append(Path(env.get("JUPYTER_CONFIG_DIR") or Path.home() / ".jupyter"))
    dirs.append(Path(sys.prefix) / "etc" / "jupyter")
    return list(dict.fromkeys(dirs))


def load_config(
    settings: Sequence[str] = (),
    *,
    dirs: Sequence[Path] | None = None,
    profile: Path | None = None,
) -> Config:
    """Build the kernel's configuration from config files and command-line settings.

    Settings win over files, a stronger directory over a weaker one, the kernel's own files
    over the IPython profile's, and within one directory a `.json` file over a `.py` file.

    Args:
        settings: Arguments of the form `--Class.trait=value`.
        dirs: The config directories, strongest first; `config_dirs()` by default.
        profile: An IPython profile directory: its `ipython_config` and then
            `ipython_kernel_config` files are read first, as ipykernel reads them.

    Returns:
        The merged configuration.

    Raises:
        ConfigFileError: A config file could not be read or run.
        traitlets.config.loader.ArgumentError: A setting cannot be parsed.
    """
    from traitlets.config import Config
    from traitlets.config.loader import (
        JSONFileConfigLoader,
        KVArgParseConfigLoader,
        PyFileConfigLoader,
    )

    config = Config()
    loaders = ((".py", PyFileConfigLoader), (".json", JSONFileConfigLoader))  # later ones win
    files: list[tuple[Path, str]] = []
    if profile is not None:
        files += [(profile, name) for name in _IPYTHON_CONFIG_FILE_NAMES]
    files += [(d, CONFIG_FILE_NAME) for d in reversed(config_dirs() if dirs is None else dirs)]
    for directory, base in files:
        for suffix, loader_class in loaders:
            path = directory / f"{base}{suffix}"
            if not path.is_file():
                continue
            try:
                loaded = loader_class(path.name, path=str(directory)).load_config()
            except Exception as e:
                msg = f"Cannot load the config file {path}: {type(e).__name__}: {e}"
                raise ConfigFileError(msg) from e
            config.merge(loaded)
    config.merge(KVArgParseConfigLoader(argv=list(settings)).load_config())
    return config


# --- the command line ----------------------------------------------------------------------


def _add_location(parser: argparse.ArgumentParser, verb: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--user",
        action="store_true",
        help=f"{verb} the user's Jupyter data directory (the default)",
    )
    group.add_argument(
        "--sys-prefix",
        action="store_true",
        help=f"{verb} this Python environment ({sys.prefix}/share/jupyter)",
    )
    group.add_argument(
        "--prefix",
        metavar="PREFIX",
        help=f"{verb} PREFIX/share/jupyter",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the `async-kernel` command."""
    parser = argparse.ArgumentParser(
        prog="async-kernel",
        description="A concurrent Python kernel for Jupyter.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    install = commands.add_parser(
        "install",
        help="install a kernel spec",
        usage="%(prog)s [-h] [--name NAME] [--display-name DISPLAY_NAME]\n"
        "       [--user | --sys-prefix | --prefix PREFIX] [--backend {asyncio,trio}]\n"
        "       [--interrupt-mode {signal,message}] [--Class.trait=value ...]",
        description="Install a kernel spec that starts async-kernel with this Python. "
        "Extra arguments --Class.trait=value are stored in the spec and passed to every start.",
        allow_abbrev=False,
    )
    install.add_argument(
        "--name",
        default=kernelspec.DEFAULT_NAME,
        help=f"the spec's name (default: {kernelspec.DEFAULT_NAME})",
    )
    install.add_argument(
        "--display-name",
        help=f"the name shown by Jupyter (default: {kernelspec.DEFAULT_DISPLAY_NAME!r})",
    )
    _add_location(install, "install into")
    install.add_argument(
        "--backend",
        choices=kernelspec.BACKENDS,
        default="asyncio",
        help="the event loop of the main thread (default: asyncio)",
    )
    install.add_argument(
        "--interrupt-mode",
        choices=kernelspec.INTERRUPT_MODES,
        default="signal",
        help="how clients interrupt the kernel: SIGINT, or an interrupt_request message on the "
        "control channel (for kernels behind gateways or in containers; default: signal)",
    )

    uninstall = commands.add_parser(
        "uninstall",
        help="remove a kernel spec",
        description="Remove a kernel spec from one location.",
        allow_abbrev=False,
    )
    uninstall.add_argument(
        "--name",
        default=kernelspec.DEFAULT_NAME,
        help=f"the spec's name (default: {kernelspec.DEFAULT_NAME})",
    )
    _add_location(uninstall, "remove from")

    listing = commands.add_parser(
        "list",
        help="list the kernel specs Jupyter can see",
        description="Print the name and directory of every kernel spec Jupyter can see.",
        allow_abbrev=False,
    )

    start = commands.add_parser(
        "start",
        help="start the kernel (Jupyter does this)",
        usage="%(prog)s [-h] -f CONNECTION_FILE [--profile NAME] [--Class.trait=value ...]\n"
        "       %(prog)s [-h] --registration-file REGISTRATION_FILE [-f CONNECTION_FILE] [...]",
        description="Start the kernel. Extra arguments --Class.trait=value configure it; they "
        f"override the config files {CONFIG_FILE_NAME}.py/.json in the Jupyter config dirs.",
        allow_abbrev=False,
    )
    start.add_argument(
        "-f",
        "--connection-file",
        metavar="CONNECTION_FILE",
        help="the connection file written by the Jupyter client (or a registration file); with "
        "--registration-file, where the kernel writes its connection info",
    )
    start.add_argument(
        "--registration-file",
        metavar="REGISTRATION_FILE",
        help="start with the JEP 66 handshake: bind ports of the kernel's choosing and report "
        "them to the registrar the file names",
    )
    start.add_argument(
        "--profile",
        default="default",
        metavar="NAME",
        help="the IPython profile: its config files, startup files and history (default: "
        "%(default)s)",
    )
    for sub in (install, uninstall, listing, start):
        sub.set_defaults(subparser=sub)
    return parser


def _fail(message: str) -> int:
    print(f"async-kernel: error: {message}", file=sys.stderr)
    return 1


def _positional(arg: str) -> bool:
    return arg == "-" or not arg.startswith("-")


def _run(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    args, extras = parser.parse_known_args(argv)
    command: str | None = args.command
    if command is None:
        parser.print_usage(sys.stderr)
        print(
            "async-kernel: error: choose a command: install, uninstall, list or start",
            file=sys.stderr,
        )
        return 2
    parser = args.subparser  # so that usage errors show the command's own usage
    settings = [arg for arg in extras if _SETTING_RE.fullmatch(arg)]
    unknown = [arg for arg in extras if arg not in settings]
    if command == "start" and unknown and all(_positional(arg) for arg in unknown):
        # Jupyter passes a frontend's own arguments on to the kernel (`jupyter run script.py`
        # starts it with `script.py`); like ipykernel, the kernel starts anyway.
        print(f"async-kernel start: ignoring arguments: {' '.join(unknown)}", file=sys.stderr)
        unknown = []
    if unknown or (settings and command not in _WITH_SETTINGS):
        parser.error(
            f"unrecognized arguments for {command!r}: {' '.join(unknown or settings)}"
            + (" (settings are written --Class.trait=value)" if command in _WITH_SETTINGS else "")
        )
    match command:
        case "install":
            try:
                path = kernelspec.install(
                    args.name,
                    display_name=args.display_name,
                    user=args.user,
                    sys_prefix=args.sys_prefix,
                    prefix=args.prefix,
                    backend=args.backend,
                    interrupt_mode=args.interrupt_mode,
                    settings=settings,
                )
            except ValueError as e:
                parser.error(str(e))
            except OSError as e:
                return _fail(f"cannot write the kernel spec: {e}")
            print(f"Installed kernel spec {args.name!r} in {path}")
        case "uninstall":
            try:
                path = kernelspec.uninstall(
                    args.name, user=args.user, sys_prefix=args.sys_prefix, prefix=args.prefix
                )
            except ValueError as e:
                parser.error(str(e))
            except (kernelspec.KernelSpecNotFoundError, OSError) as e:
                return _fail(str(e))
            print(f"Removed kernel spec {args.name!r} from {path}")
        case "list":
            specs = kernelspec.find_kernelspecs()
            if not specs:
                print("No kernel specs found.", file=sys.stderr)
            width = max((len(name) for name in specs), default=0)
            for name in sorted(specs):
                print(f"{name:<{width}}  {specs[name]}")
        case _:
            if not (args.connection_file or args.registration_file):
                parser.error("give -f CONNECTION_FILE, or --registration-file REGISTRATION_FILE")
            return _start(
                parser, args.connection_file, args.registration_file, settings, profile=args.profile
            )
    return 0


def _start(
    parser: argparse.ArgumentParser,
    connection_file: str | None,
    registration_file: str | None,
    settings: list[str],
    *,
    profile: str,
) -> int:
    from traitlets.config.loader import ArgumentError

    # Imported here: the kernel pulls in IPython and zmq, which the other commands never need.
    from async_kernel.ipython._startup import ProfileNotFoundError, profile_dir

    try:
        location = Path(profile_dir(profile).location)
        config = load_config([*settings, f"--Kernel.profile={profile}"], profile=location)
    except ArgumentError as e:
        parser.error(str(e))
    except (ConfigFileError, ProfileNotFoundError) as e:
        return _fail(str(e))
    from async_kernel._kernel import Kernel
    from async_kernel.wire._connection import ConnectionFileError
    from async_kernel.wire._registration import RegistrationError
    from async_kernel.wire._sockets import BindError

    files = {"connection_file": connection_file, "registration_file": registration_file}
    try:
        kernel = Kernel(config=config, **{name: path for name, path in files.items() if path})
    except ConnectionFileError as e:
        return _fail(f"cannot start the kernel: {e}")
    try:
        code = kernel.run() or 0
    except (BindError, RegistrationError) as e:
        code = _fail(f"cannot start the kernel: {e}")
    _exit_past_user_threads(code)
    return code


def _exit_past_user_threads(code: int) -> None:
    """End the process now if threads that cells started would keep it alive after shutdown."""
    import threading

    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the `async-kernel` command.

    Args:
        argv: The arguments after the program name; `sys.argv[1:]` by default.

    Returns:
        The exit code: 0 on success, 1 when the work failed, 2 for bad usage.
    """
    parser = build_parser()
    try:
        return _run(parser, sys.argv[1:] if argv is None else list(argv))
    except SystemExit as e:  # argparse's --help, --version and usage errors
        code = e.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
