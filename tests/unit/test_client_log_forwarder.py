"""The client's LogForwarder: a failed read is retried from the byte it had reached (nothing lost,
nothing twice); it ends when the server ends, when the workload is gone, or after ``give_up``."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable

from gpustack_runtime.deployer import Container, ContainerExecution, WorkloadPlan

from berth.client._logs import LogForwarder
from berth.deployers import DeployerUnavailable
from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import LogChunk, WorkloadState

NAME = "srv"


class FlakyDeployer(MemoryDeployer):
    """A memory deployer whose log reads fail while ``down`` is set (its helper restarting)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()
        self.failed_reads = 0

    def _logs(self, name: str, container: str, start: int, end: int | None) -> LogChunk:
        if self.down.is_set():
            self.failed_reads += 1
            raise DeployerUnavailable("the helper is restarting")
        return super()._logs(name, container, start, end)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def created(deployer: MemoryDeployer) -> MemoryDeployer:
    container = Container(name="default", image="none", execution=ContainerExecution(command=["serve"]))
    deployer.create(WorkloadPlan(name=NAME, containers=[container]))
    return deployer


def forwarder(deployer: MemoryDeployer, out: io.StringIO, **retry: float) -> LogForwarder:
    settings = {"retry_initial": 0.01, "retry_max": 0.05, **retry}
    return LogForwarder(deployer, NAME, "[s]", [], out, **settings)


def test_resumes_from_its_offset_after_failed_reads() -> None:
    deployer, out = created(FlakyDeployer()), io.StringIO()
    fwd = forwarder(deployer, out).start()
    try:
        deployer.write_log(NAME, b"one\ntw")
        wait_for(lambda: "[s] one" in out.getvalue(), "the first line")
        deployer.down.set()
        deployer.write_log(NAME, b"o\nthree\n")  # written while reads fail
        wait_for(lambda: deployer.failed_reads >= 3, "reads to fail a few times")
        deployer.down.clear()
        deployer.write_log(NAME, b"four\n")
        wait_for(lambda: "[s] four" in out.getvalue(), "the lines after the outage")
        deployer.set_state(NAME, WorkloadState.STOPPED)
        fwd._thread.join(5)
        assert not fwd._thread.is_alive(), "the forwarder did not end with the server"
    finally:
        fwd.stop()
    assert out.getvalue().splitlines() == ["[s] one", "[s] two", "[s] three", "[s] four"]


def test_ends_when_the_workload_is_gone() -> None:
    deployer, out = created(FlakyDeployer()), io.StringIO()
    fwd = forwarder(deployer, out, give_up=60).start()
    try:
        deployer.write_log(NAME, b"last words")  # no newline: flushed as the final line
        wait_for(lambda: fwd._offset == 10, "the bytes to be read")
        deployer.delete(NAME)
        fwd._thread.join(5)
        assert not fwd._thread.is_alive(), "the forwarder went on after its workload was deleted"
    finally:
        fwd.stop()
    assert out.getvalue().splitlines() == ["[s] last words"]


def test_gives_up_after_failing_for_give_up_seconds_and_says_so() -> None:
    deployer, out = created(FlakyDeployer()), io.StringIO()
    deployer.down.set()
    fwd = forwarder(deployer, out, give_up=0.3).start()
    try:
        fwd._thread.join(5)
        assert not fwd._thread.is_alive(), "the forwarder never gave up"
    finally:
        fwd.stop()
    assert deployer.failed_reads >= 3  # it retried before giving up
    [line] = out.getvalue().splitlines()
    assert line.startswith("[s] log forwarding stopped after 0.3 s of failed reads") and "restarting" in line


def test_stop_ends_a_forwarder_waiting_to_retry() -> None:
    deployer, out = created(FlakyDeployer()), io.StringIO()
    deployer.down.set()
    fwd = forwarder(deployer, out, retry_initial=30, retry_max=30).start()
    wait_for(lambda: deployer.failed_reads == 1, "the first failed read")
    began = time.monotonic()
    fwd.stop()
    assert not fwd._thread.is_alive() and time.monotonic() - began < 5
    assert out.getvalue() == ""
