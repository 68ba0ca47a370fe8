"""A JupyterLab server process for the browser tests, isolated in a temporary directory.

`LabServer.start()` installs this kernel's kernelspec into a private prefix, points `HOME`,
every `JUPYTER_*` directory, JupyterLab's settings and workspaces and IPython at the
temporary directory, starts `jupyter lab` on a free loopback port and waits until its REST API
answers. Nothing outside that directory is read from or written to the user's setup, and the
server only listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import nbformat

from async_kernel import kernelspec

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("KERNEL_DISPLAY_NAME", "KERNEL_NAME", "LabServer", "LabServerError")

KERNEL_NAME = "async-e2e"
"""The kernelspec the server offers (and the only one it allows)."""
KERNEL_DISPLAY_NAME = "async-kernel (e2e)"
"""Its display name, which JupyterLab shows in the status bar and the kernel picker."""

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 20.0
_HOST = "127.0.0.1"

# JupyterLab settings that keep the page quiet and offline: no news or update checks and no
# toasts that could cover the cells a test clicks on.
_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
}


class LabServerError(RuntimeError):
    """The JupyterLab server did not start, answer or stop as expected."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return sock.getsockname()[1]


class LabServer:
    """A running `jupyter lab` process and a small client for its REST API."""

    def __init__(self, base: Path) -> None:
        """Prepare (but do not start) a server whose every file lives under `base`."""
        self.base = base
        self.root_dir = base / "root"
        """The directory the server serves: notebooks are created here."""
        self.token = uuid.uuid4().hex
        self.port = _free_port()
        self.url = f"http://{_HOST}:{self.port}"
        self.log_path = base / "jupyterlab.log"
        self._process: subprocess.Popen[bytes] | None = None
        # Loopback only: never send the API calls through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- life cycle ------------------------------------------------------------------------

    @classmethod
    def start(cls, base: Path, *, timeout: float = _START_TIMEOUT) -> Self:
        """Start a server in `base` and wait until its API answers.

        Raises:
            LabServerError: The process exited or did not answer within `timeout` seconds
                (the message ends with the tail of its log).
        """
        server = cls(base)
        server._launch()
        try:
            server._wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _environment(self) -> dict[str, str]:
        prefix = self.base / "prefix"
        kernelspec.install(KERNEL_NAME, prefix=prefix, display_name=KERNEL_DISPLAY_NAME)
        settings_dir = self.base / "lab-settings"
        for plugin, values in _SETTINGS.items():
            path = settings_dir / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values), encoding="utf-8")
        home = self.base / "home"
        home.mkdir()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("JUPYTER", "IPYTHON", "XDG_"))
        }
        env.update(
            HOME=str(home),
            JUPYTER_CONFIG_DIR=str(self.base / "config"),
            JUPYTER_DATA_DIR=str(self.base / "data"),
            JUPYTER_RUNTIME_DIR=str(self.base / "runtime"),
            JUPYTER_PATH=str(prefix / "share" / "jupyter"),
            JUPYTER_PLATFORM_DIRS="1",
            JUPYTERLAB_SETTINGS_DIR=str(settings_dir),
            JUPYTERLAB_WORKSPACES_DIR=str(self.base / "workspaces"),
            IPYTHONDIR=str(self.base / "ipython"),
            PYDEVD_DISABLE_FILE_VALIDATION="1",
        )
        return env

    def _launch(self) -> None:
        self.root_dir.mkdir(parents=True)
        argv = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            f"--ip={_HOST}",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            f"--KernelSpecManager.allowed_kernelspecs={KERNEL_NAME}",
            f"--MappingKernelManager.default_kernel_name={KERNEL_NAME}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            # The default manager asks PyPI about extensions; these tests stay on loopback.
            "--LabApp.extension_manager=readonly",
        ]
        env = self._environment()
        with self.log_path.open("wb") as log:
            # The child keeps its own copy of the log's file descriptor.
            self._process = subprocess.Popen(
                argv,
                cwd=self.root_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                msg = f"jupyter lab exited during start-up.\n{self.log_tail()}"
                raise LabServerError(msg)
            try:
                self.api("GET", "/api/status", timeout=2.0)
            except (OSError, LabServerError):
                if time.monotonic() > deadline:
                    msg = f"jupyter lab did not answer within {timeout:.0f}s.\n{self.log_tail()}"
                    raise LabServerError(msg) from None
                # Pause between polls by waiting on the process: an exit ends the pause early.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(0.25)
            else:
                return

    def stop(self) -> None:
        """Shut the server (and so its kernels) down; kill it if it does not exit in time."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(OSError, LabServerError):
                self.api("POST", "/api/shutdown", timeout=5.0)
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(_STOP_TIMEOUT / 2)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "--- jupyter lab log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    # --- REST API --------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> Any:
        """Call the server's REST API; return the decoded JSON answer (None if empty).

        Raises:
            LabServerError: The server answered with an HTTP error status.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            error.close()
            msg = f"{method} {path} answered {error.code} {error.reason}"
            raise LabServerError(msg) from None
        return json.loads(payload) if payload else None

    def create_notebook(self, name: str, sources: Sequence[str]) -> str:
        """Save a notebook of code cells on this server's kernelspec; return its path."""
        notebook = nbformat.v4.new_notebook(
            metadata={
                "kernelspec": {
                    "name": KERNEL_NAME,
                    "display_name": KERNEL_DISPLAY_NAME,
                    "language": "python",
                }
            }
        )
        notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
        path = f"{name}.ipynb"
        self.api(
            "PUT",
            f"/api/contents/{path}",
            {"type": "notebook", "format": "json", "content": notebook},
        )
        return path

    def shutdown_sessions(self) -> None:
        """Shut down every session and its kernel, so tests do not leave kernels running."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}", timeout=30.0)
