"""The comm manager's owners and policies (output/_comm.py), without a kernel."""

from __future__ import annotations

import pytest
from comm.base_comm import BaseComm

from async_kernel import CommPolicy, set_comm_policy
from async_kernel.output._comm import MAIN_SHELL, KernelCommManager, current_owner, handling_for
from async_kernel.wire._ipykernel import job_for
from async_kernel.wire._job import current_job


class _Comm(BaseComm):
    def publish_msg(self, *args: object, **kwargs: object) -> None:
        pass


def _comm(manager: KernelCommManager, target: str = "t") -> BaseComm:
    comm = _Comm(target_name=target, primary=False)
    manager.register_comm(comm)
    return comm


def test_owner_is_the_shell_of_the_current_request() -> None:
    assert current_owner() is MAIN_SHELL
    token = current_job.set(job_for({"header": {"msg_id": "m", "subshell_id": "s1"}}))
    try:
        assert current_owner() == "s1"
        with handling_for(MAIN_SHELL):  # a handler of a main-shell comm runs here
            assert current_owner() is MAIN_SHELL
        assert current_owner() == "s1"
    finally:
        current_job.reset(token)


def test_policy_of_the_comm_beats_its_targets_which_beats_the_kernels() -> None:
    manager = KernelCommManager(CommPolicy.owner_idle)
    comm = _comm(manager)
    msg = {"comm_id": comm.comm_id}
    assert manager.route("comm_msg", msg) == (MAIN_SHELL, CommPolicy.owner_idle)
    manager.set_policy("t", "arrival")
    assert manager.route("comm_msg", msg)[1] is CommPolicy.arrival
    manager.set_policy(comm, CommPolicy.owner)
    assert manager.route("comm_msg", msg)[1] is CommPolicy.owner
    manager.set_policy(comm, None)
    manager.set_policy("t", None)
    manager.policy = CommPolicy.arrival
    assert manager.route("comm_msg", msg)[1] is CommPolicy.arrival
    with pytest.raises(ValueError, match="'sometimes' is not a valid CommPolicy"):
        manager.set_policy(comm, "sometimes")


def test_frontend_comm_belongs_to_its_targets_owner_from_the_open_on() -> None:
    manager = KernelCommManager()
    token = current_job.set(job_for({"header": {"msg_id": "m", "subshell_id": "s2"}}))
    try:
        manager.register_target("t", lambda comm, msg: None, policy="owner_idle")
    finally:
        current_job.reset(token)
    # Recorded when the open is routed, before the comm exists.
    assert manager.route("comm_open", {"comm_id": "c", "target_name": "t"}) == (
        "s2",
        CommPolicy.owner_idle,
    )
    assert manager.route("comm_msg", {"comm_id": "c"})[0] == "s2"
    comm = _comm(manager)  # the open's handler registers it, in a context of any shell
    assert manager.route("comm_msg", {"comm_id": comm.comm_id})[0] is MAIN_SHELL
    manager.move_owner("s2", MAIN_SHELL)
    assert manager.route("comm_msg", {"comm_id": "c"})[0] is MAIN_SHELL
    assert manager.route("comm_open", {"comm_id": "d", "target_name": "nobody"})[0] is MAIN_SHELL


def test_closed_comms_are_forgotten() -> None:
    manager = KernelCommManager()
    comm = _comm(manager)
    manager.set_policy(comm, "arrival")
    manager.comm_close(None, None, {"content": {"comm_id": comm.comm_id, "data": {}}})
    assert manager.comms == {}
    assert manager.route("comm_msg", {"comm_id": comm.comm_id}) == (MAIN_SHELL, CommPolicy.owner)


def test_set_comm_policy_needs_a_kernel() -> None:
    with pytest.raises(RuntimeError, match="needs a running async-kernel"):
        set_comm_policy("jupyter.widget", "arrival")
