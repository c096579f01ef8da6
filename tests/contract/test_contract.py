"""The deployer contract (:mod:`berth.deployers.base`), the same cases for every deployer.

The fake (``memory``) passes exactly what the real ones pass: no case asks a kind what it is.
A workload is created at most once per case, and the one every reading case shares lives for
the whole module (the launcher starts a vLLM server for each).
"""

from __future__ import annotations

import time

import pytest
from gpustack_runtime.deployer import WorkloadPlan

from berth.deployers import (
    INSTANCE_LABEL,
    MANAGED_LABEL,
    RUN_CONTAINER,
    STOPPED_BY_BERTH,
    InvalidWorkload,
    WorkloadExists,
    WorkloadNotFound,
)
from berth.schemas.workload import WorkloadState, WorkloadStatus
from tests.contract.conftest import Subject, stand_in

SETTLE = 60.0
_SETTLING = (WorkloadState.PENDING, WorkloadState.STARTING, WorkloadState.UNKNOWN)


def settled(subject: Subject, name: str) -> WorkloadStatus:
    """The status once the deployer has started every process (never a terminal one here)."""
    deadline = time.monotonic() + SETTLE
    status = subject.deployer.get(name)
    while status.state in _SETTLING and time.monotonic() < deadline:
        time.sleep(0.2)
        status = subject.deployer.get(name)
    assert not status.state.terminal, f"{name} ended on its own: {status.reason}"
    return status


@pytest.fixture(scope="module")
def live(subject: Subject) -> str:
    """One live workload the reading cases share."""
    name = subject.name("live")
    subject.deployer.create(subject.live_plan(name))
    return name


# -- check -----------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["bad name", "x" * 64, "no containers", "twice the same container"])
def test_check_and_create_refuse_what_no_deployer_runs(subject: Subject, problem: str) -> None:
    name = subject.name("refused")
    plan = subject.live_plan(name)
    if problem == "no containers":
        plan.containers = []
    elif problem == "twice the same container":
        plan.containers = [stand_in(RUN_CONTAINER), stand_in(RUN_CONTAINER)]
    else:
        plan.name = problem
    reason = subject.deployer.check(plan)
    assert reason
    with pytest.raises(InvalidWorkload) as refused:
        subject.deployer.create(plan)
    assert reason in str(refused.value)
    with pytest.raises(WorkloadNotFound):
        subject.deployer.get(str(plan.name))


def test_check_and_create_agree_on_a_sidecar_plan(subject: Subject) -> None:
    name = subject.name("sidecar")
    plan = subject.sidecar_plan(name)
    reason = subject.deployer.check(plan)
    if reason is not None:
        with pytest.raises(InvalidWorkload, match="ray-head"):
            subject.deployer.create(plan)
        return
    created = subject.deployer.create(plan)
    assert [c.name for c in created.containers][:1] == [RUN_CONTAINER]
    assert {c.name for c in settled(subject, name).containers} == {RUN_CONTAINER, "ray-head"}
    assert subject.deployer.delete(name, timeout=5.0).state is WorkloadState.STOPPED


# -- one live workload ---------------------------------------------------------------------------


def test_a_live_workload_is_running_and_labelled(subject: Subject, live: str) -> None:
    status = settled(subject, live)
    assert status.state is WorkloadState.RUNNING
    assert status.name == live and status.deployer == subject.deployer.name
    assert status.labels[MANAGED_LABEL] == "true" and status.labels[INSTANCE_LABEL] == live
    assert RUN_CONTAINER in [c.name for c in status.containers]


def test_a_taken_name_is_refused(subject: Subject, live: str) -> None:
    with pytest.raises(WorkloadExists):
        subject.deployer.create(subject.live_plan(live))
    assert not subject.deployer.get(live).state.terminal


def test_log_ranges(subject: Subject, live: str) -> None:
    deployer = subject.deployer
    for start, end in ((5, 2), (-1, None), (-1, 3)):
        with pytest.raises(ValueError):
            deployer.logs(live, start=start, end=end)
    empty = deployer.logs(live, start=0, end=-1)
    assert empty.data == b"" and empty.start == 0
    past = deployer.logs(live, start=1 << 40)
    assert past.data == b"" and past.start == 1 << 40 and past.total < 1 << 40
    head = deployer.logs(live, start=0, end=3)
    assert len(head.data) == min(4, head.total)
    with pytest.raises(WorkloadNotFound):
        deployer.logs(live, container="no-such-container")


def test_close_never_stops_a_workload(subject: Subject, live: str) -> None:
    subject.deployer.close()
    again = subject.reopen()
    status = again.adopt(live, dict(subject.deployer.get(live).identity))
    assert status.name == live and not status.state.terminal
    assert live in [s.name for s in again.list()]


# -- several workloads -------------------------------------------------------------------------


def test_list_is_berth_s_workloads_by_name(subject: Subject, live: str) -> None:
    second = subject.name("a-first")  # sorts before "live"
    subject.deployer.create(subject.live_plan(second))
    try:
        names = [s.name for s in subject.deployer.list()]
        assert names == sorted(names)
        assert {second, live} <= set(names)
        assert all(s.labels.get(MANAGED_LABEL) for s in subject.deployer.list())
    finally:
        subject.deployer.delete(second, timeout=5.0)


def test_unknown_names(subject: Subject) -> None:
    deployer = subject.deployer
    name = f"{subject.prefix}-never-created"
    with pytest.raises(WorkloadNotFound):
        deployer.get(name)
    with pytest.raises(WorkloadNotFound):
        deployer.logs(name)
    with pytest.raises(WorkloadNotFound):
        deployer.adopt(name, {})
    assert deployer.delete(name, timeout=1.0) is None
    assert deployer.delete("not a valid name", timeout=1.0) is None


# -- the end of a workload -----------------------------------------------------------------------


def test_delete_stops_a_live_workload_and_says_so(subject: Subject) -> None:
    name = subject.name("deleted")
    subject.deployer.create(subject.live_plan(name))
    settled(subject, name)
    last = subject.deployer.delete(name, timeout=5.0)
    assert last is not None and last.name == name
    assert last.state is WorkloadState.STOPPED and last.reason == STOPPED_BY_BERTH
    assert all(c.state is WorkloadState.STOPPED for c in last.containers)
    assert subject.deployer.delete(name, timeout=5.0) is None
    with pytest.raises(WorkloadNotFound):
        subject.deployer.get(name)
    assert name not in [s.name for s in subject.deployer.list()]


def test_shutdown_stops_helpers_or_nothing(subject: Subject, live: str) -> None:
    """Last: the launcher's shutdown ends its daemon and every instance in it."""
    stopped = subject.deployer.shutdown(timeout=5.0)
    try:
        after = subject.deployer.get(live).state
    except WorkloadNotFound:
        after = WorkloadState.STOPPED
    assert after.terminal is stopped


def test_a_plan_is_never_edited(subject: Subject) -> None:
    plan: WorkloadPlan = subject.live_plan(subject.name("untouched"))
    plan.name = "not valid"
    before = repr(plan)
    subject.deployer.check(plan)
    with pytest.raises(InvalidWorkload):
        subject.deployer.create(plan)
    assert repr(plan) == before
