"""Comm messages addressed as JupyterLab 4.4+ addresses them ("Kernel comms over subshells").

JupyterLab's setting `commsOverSubshells` has three values. `perCommTarget` (the default)
creates one subshell per comm target name and sends every comm_open, comm_msg and comm_close of
that target's comms with its `subshell_id`; `perComm` creates a subshell for each comm;
`disabled` sends them without a subshell (the main shell). `LabComms` plays that part for a
`Driver`: it creates the subshells over control as JupyterLab does and puts their ids in the
headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel_driver import Driver

__all__ = ("SETTINGS", "LabComms")

SETTINGS = ("perCommTarget", "perComm", "disabled")
"""The values of JupyterLab's setting, default first."""


class LabComms:
    """Sends comm messages with the subshell headers JupyterLab's `setting` would give them."""

    def __init__(self, driver: Driver, setting: str) -> None:
        assert setting in SETTINGS, setting
        self.d = driver
        self.setting = setting
        self._subshells: dict[str, str] = {}
        self._targets: dict[str, str] = {}

    def header(self, comm_id: str, target_name: str | None = None) -> dict[str, Any]:
        """The header fields of a message for comm `comm_id` (of `target_name`, when new)."""
        if target_name is not None:
            self._targets.setdefault(comm_id, target_name)
        if self.setting == "disabled":
            return {}
        key = comm_id if self.setting == "perComm" else self._targets.get(comm_id, "")
        if key not in self._subshells:
            self._subshells[key] = self.d.create_subshell()
        return {"subshell_id": self._subshells[key]}

    def open(self, comm_id: str, target_name: str, data: dict[str, Any] | None = None) -> str:
        """Open a comm from the frontend; return the msg_id."""
        content = {"comm_id": comm_id, "target_name": target_name, "data": data or {}}
        return self.d.send("comm_open", content, header=self.header(comm_id, target_name))

    def msg(self, comm_id: str, data: dict[str, Any], target_name: str | None = None) -> str:
        """Send a comm_msg; return the msg_id."""
        content = {"comm_id": comm_id, "data": data}
        return self.d.send("comm_msg", content, header=self.header(comm_id, target_name))

    def close(self, comm_id: str) -> str:
        """Close a comm from the frontend; return the msg_id."""
        content = {"comm_id": comm_id, "data": {}}
        return self.d.send("comm_close", content, header=self.header(comm_id))

    def custom(self, comm_id: str, content: dict[str, Any], target_name: str) -> str:
        """Send an ipywidgets custom message (what a widget's view sends to its model)."""
        return self.msg(comm_id, {"method": "custom", "content": content}, target_name)
