"""Kernel specs: install, remove and find the `kernel.json` files that let Jupyter start us.

A kernel spec is a directory `<data dir>/kernels/<name>/` holding a `kernel.json`. The Jupyter
data directories are computed here with the same rules as Jupyter itself, so that this module
needs neither `jupyter_core` nor `jupyter_client` at run time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from async_kernel._enums import BACKENDS, Backend
from async_kernel.requests._debugger import debugpy_available

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = (
    "DEFAULT_DISPLAY_NAME",
    "DEFAULT_NAME",
    "INTERRUPT_MODES",
    "KernelSpecNotFoundError",
    "data_dirs",
    "find_kernelspecs",
    "get_kernelspec",
    "install",
    "kernels_dir",
    "normalize_settings",
    "runtime_dir",
    "uninstall",
    "user_data_dir",
    "validate_name",
)

DEFAULT_NAME = "async"
"""The kernel spec name used when none is given."""
DEFAULT_DISPLAY_NAME = "Python 3 (async-kernel)"
"""The display name used when none is given (" trio" is appended for the trio backend)."""
INTERRUPT_MODES = ("signal", "message")
"""How a client interrupts the kernel: SIGINT, or an `interrupt_request` on the control channel."""

_NAME_RE = re.compile(r"[a-z0-9._-]+")
_SETTING_RE = re.compile(r"(?:--)?(?P<key>[A-Za-z_]\w*\.[A-Za-z_]\w*)=(?P<value>.*)", re.DOTALL)
_FALSE = frozenset({"", "0", "0.0", "false", "f", "no", "n", "off"})


class KernelSpecNotFoundError(LookupError):
    """No kernel spec of that name exists where it was looked for."""


# --- where the specs live ------------------------------------------------------------------


def user_data_dir() -> Path:
    """Return the current user's Jupyter data directory.

    `$JUPYTER_DATA_DIR` when set; otherwise `~/Library/Jupyter` on macOS,
    `%APPDATA%\\jupyter` on Windows and `$XDG_DATA_HOME/jupyter` (by default
    `~/.local/share/jupyter`) elsewhere.
    """
    if explicit := os.environ.get("JUPYTER_DATA_DIR"):
        return Path(explicit)
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Jupyter"
    if sys.platform == "win32":
        if appdata := os.environ.get("APPDATA"):
            return Path(appdata) / "jupyter"
        config = os.environ.get("JUPYTER_CONFIG_DIR") or str(home / ".jupyter")
        return Path(config) / "data"
    xdg = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(xdg) / "jupyter"


def runtime_dir() -> Path:
    """Return the Jupyter runtime directory: `$JUPYTER_RUNTIME_DIR`, or `runtime` in the data dir.

    Where connection files go when the kernel names its own (the JEP 66 handshake).
    """
    if explicit := os.environ.get("JUPYTER_RUNTIME_DIR"):
        return Path(explicit)
    return user_data_dir() / "runtime"


def _prefix_data_dir(prefix: str | os.PathLike[str]) -> Path:
    return Path(prefix) / "share" / "jupyter"


def _system_data_dirs() -> list[Path]:
    if sys.platform == "win32":
        # %PROGRAMDATA% is writable by every user, so Jupyter only trusts it on request.
        programdata = os.environ.get("PROGRAMDATA")
        if programdata and _truthy(os.environ.get("JUPYTER_USE_PROGRAMDATA")):
            return [Path(programdata) / "jupyter"]
        return [_prefix_data_dir(sys.prefix)]
    return [Path("/usr/local/share/jupyter"), Path("/usr/share/jupyter")]


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in _FALSE


def _prefer_environment() -> bool:
    """Whether `sys.prefix` is searched before the user directory, as Jupyter decides it."""
    explicit = os.environ.get("JUPYTER_PREFER_ENV_PATH")
    if explicit is not None:
        return _truthy(explicit)
    return sys.prefix != sys.base_prefix


def data_dirs() -> list[Path]:
    """Return the Jupyter data directories in search order, the first one winning.

    The order is: each entry of `$JUPYTER_PATH`; the user directory and `sys.prefix/share/jupyter`
    (the environment first inside a virtual environment or when `$JUPYTER_PREFER_ENV_PATH` is
    true); then the system directories.
    """
    dirs: list[Path] = [
        Path(entry) for entry in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if entry
    ]
    user, env = user_data_dir(), _prefix_data_dir(sys.prefix)
    dirs.extend((env, user) if _prefer_environment() else (user, env))
    dirs.extend(_system_data_dirs())
    return list(dict.fromkeys(dirs))


def kernels_dir(
    *, user: bool = False, sys_prefix: bool = False, prefix: str | os.PathLike[str] | None = None
) -> Path:
    """Return the `kernels` directory of one install location (the user's by default).

    Args:
        user: The current user's data directory.
        sys_prefix: `sys.prefix/share/jupyter`, the running Python environment.
        prefix: `<prefix>/share/jupyter`.

    Raises:
        ValueError: More than one location was chosen.
    """
    chosen = sum((user, sys_prefix, prefix is not None))
    if chosen > 1:
        msg = "Choose at most one of user, sys_prefix and prefix."
        raise ValueError(msg)
    if prefix is not None:
        return _prefix_data_dir(Path(prefix).absolute()) / "kernels"
    if sys_prefix:
        return _prefix_data_dir(sys.prefix) / "kernels"
    return user_data_dir() / "kernels"


# --- validation ----------------------------------------------------------------------------


def validate_name(name: str) -> str:
    """Return `name` if it can name a kernel spec.

    Raises:
        ValueError: `name` has characters other than lowercase letters, digits, `.`, `_`, `-`.
    """
    if not _NAME_RE.fullmatch(name):
        msg = (
            f"Invalid kernel spec name {name!r}: use only lowercase letters, digits, "
            "'.', '_' and '-' (for example 'async-trio')."
        )
        raise ValueError(msg)
    return name


def normalize_settings(settings: Mapping[str, object] | Iterable[str]) -> list[str]:
    """Turn settings into command-line arguments of the form `--Class.trait=value`.

    Args:
        settings: A mapping `{"Class.trait": value}`, or strings `Class.trait=value`, with or
            without the leading `--`.

    Returns:
        The arguments, in the given order.

    Raises:
        ValueError: A setting is not of the form `Class.trait=value`.
    """
    if isinstance(settings, str):
        msg = "settings must be a mapping or a list of strings, not a single string."
        raise TypeError(msg)
    if isinstance(settings, Mapping):
        items = [f"{key}={value}" for key, value in settings.items()]
    else:
        items = list(settings)
    args: list[str] = []
    for item in items:
        match = _SETTING_RE.fullmatch(item)
        if match is None:
            msg = f"Invalid setting {item!r}: write it as --Class.trait=value."
            raise ValueError(msg)
        args.append(f"--{match['key']}={match['value']}")
    return args


# --- install and remove --------------------------------------------------------------------


def _backend_setting(args: list[str]) -> str | None:
    values = [arg.partition("=")[2] for arg in args if arg.startswith("--Kernel.backend=")]
    return values[-1] if values else None


def install(
    name: str = DEFAULT_NAME,
    *,
    display_name: str | None = None,
    user: bool = False,
    sys_prefix: bool = False,
    prefix: str | os.PathLike[str] | None = None,
    backend: Backend = "asyncio",
    interrupt_mode: str = "signal",
    settings: Mapping[str, object] | Iterable[str] = (),
) -> Path:
    """Write a kernel spec that starts this Python with async-kernel.

    With none of `user`, `sys_prefix` and `prefix`, the spec goes to the user's data directory.
    An existing spec of the same name in that location is replaced.

    Args:
        name: The spec's name, which Jupyter uses to pick the kernel.
        display_name: The name shown in the launcher; by default `Python 3 (async-kernel)`, with
            ` trio` appended for the trio backend.
        user: Install into the user's data directory.
        sys_prefix: Install into `sys.prefix/share/jupyter`.
        prefix: Install into `<prefix>/share/jupyter`.
        backend: The event loop of the kernel's main thread, `asyncio` or `trio`. Stored as
            `--Kernel.backend=trio` (nothing is stored for the default, asyncio).
        interrupt_mode: How clients interrupt the kernel: `signal` (SIGINT to the kernel's
            process group, what jupyter_client does by default) or `message` (an
            `interrupt_request` on the control channel: for kernels that a launcher cannot
            signal, behind gateways, in containers, on other hosts). Both interrupt the same.
        settings: Configuration passed to the kernel on every start, as
            `{"Class.trait": value}` or `["--Class.trait=value", ...]`.

    Returns:
        The spec's directory.

    Raises:
        ValueError: The name, backend, interrupt mode, location or a setting is invalid.
    """
    validate_name(name)
    if interrupt_mode not in INTERRUPT_MODES:
        choices = ", ".join(INTERRUPT_MODES)
        msg = f"Unknown interrupt mode {interrupt_mode!r}: choose one of {choices}."
        raise ValueError(msg)
    if backend not in BACKENDS:
        msg = f"Unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}."
        raise ValueError(msg)
    args = normalize_settings(settings)
    configured = _backend_setting(args)
    if configured is not None and configured != backend and backend != "asyncio":
        msg = f"backend={backend!r} contradicts the setting --Kernel.backend={configured}."
        raise ValueError(msg)
    if backend != "asyncio" and configured is None:
        args.insert(0, f"--Kernel.backend={backend}")
    effective = configured or backend
    if display_name is None:
        display_name = DEFAULT_DISPLAY_NAME + (" trio" if effective == "trio" else "")
    spec: dict[str, Any] = {
        "argv": [sys.executable, "-m", "async_kernel", "start", "-f", "{connection_file}", *args],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": interrupt_mode,
        # "curve": the kernel encrypts every socket with the CurveZMQ keys of its connection
        # file (jupyter_client's `KernelManager.transport_encryption`).
        "metadata": {"debugger": debugpy_available(), "supported_encryption": ["curve"]},
        "env": {},
    }
    spec_dir = kernels_dir(user=user, sys_prefix=sys_prefix, prefix=prefix) / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return spec_dir


def uninstall(
    name: str = DEFAULT_NAME,
    *,
    user: bool = False,
    sys_prefix: bool = False,
    prefix: str | os.PathLike[str] | None = None,
) -> Path:
    """Remove a kernel spec from one location (the user's by default).

    Returns:
        The directory that was removed.

    Raises:
        ValueError: The name or location is invalid.
        KernelSpecNotFoundError: There is no spec of that name in that location.
    """
    validate_name(name)
    spec_dir = kernels_dir(user=user, sys_prefix=sys_prefix, prefix=prefix) / name
    # Only remove what looks like a kernel spec, never an unrelated directory.
    if not (spec_dir / "kernel.json").is_file():
        msg = f"No kernel spec {name!r} in {spec_dir.parent}."
        raise KernelSpecNotFoundError(msg)
    shutil.rmtree(spec_dir)
    return spec_dir


# --- lookup --------------------------------------------------------------------------------


def find_kernelspecs() -> dict[str, Path]:
    """Return every kernel spec Jupyter can see, as name → directory.

    When a name exists in several data directories, the first in `data_dirs()` order wins.
    """
    found: dict[str, Path] = {}
    for data_dir in data_dirs():
        kernels = data_dir / "kernels"
        try:
            entries = sorted(kernels.iterdir())
        except OSError:  # missing or unreadable: nothing to find there
            continue
        for entry in entries:
            name = entry.name.lower()
            if name not in found and (entry / "kernel.json").is_file():
                found[name] = entry
    return found


def get_kernelspec(name: str) -> dict[str, Any]:
    """Return the parsed `kernel.json` of the spec `name`.

    Raises:
        KernelSpecNotFoundError: No data directory has a spec of that name.
    """
    spec_dir = find_kernelspecs().get(name.lower())
    if spec_dir is None:
        msg = f"No kernel spec {name!r}: install one with `async-kernel install --name {name}`."
        raise KernelSpecNotFoundError(msg)
    spec: dict[str, Any] = json.loads((spec_dir / "kernel.json").read_text(encoding="utf-8"))
    return spec
