"""The container deployer without an engine: status mapping, error translation, log slicing,
and the deployer's own logic over a fake gpustack-runtime."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from gpustack_runtime.deployer import (
    Container,
    ContainerExecution,
    OperationError,
    UnsupportedError,
    WorkloadPlan,
)
from gpustack_runtime.deployer import WorkloadStatus as RuntimeStatus
from gpustack_runtime.deployer import WorkloadStatusStateEnum as RS
from gpustack_runtime.deployer.__types__ import (
    ContainerImagePullPolicyEnum,
    WorkloadStatusExit,
    WorkloadStatusOperation,
)

from berth.deployers import (
    INSTANCE_LABEL,
    MANAGED_LABEL,
    DeployerError,
    DeployerUnavailable,
    InvalidWorkload,
    WorkloadExists,
    WorkloadNotFound,
    get_deployer,
)
from berth.deployers._stdlib.names import check_name
from berth.deployers.container import ContainerDeployer
from berth.deployers.container import _errors as errors
from berth.deployers.container import _logs as logs
from berth.deployers.container import _status as mapping
from berth.deployers.container import deployer as container_module
from berth.schemas.workload import WorkloadState

# -- helpers ---------------------------------------------------------------------------------


def status(
    state: RS = RS.RUNNING,
    names: tuple[str, ...] = ("default", "ray-head"),
    exits: tuple[WorkloadStatusExit, ...] = (),
    message: str = "",
    name: str = "wl",
) -> RuntimeStatus:
    return RuntimeStatus(
        name=name,
        created_at="2026-11-23T19:48:51.123456789Z",
        labels={MANAGED_LABEL: "true", INSTANCE_LABEL: "wl"},
        loggable=[WorkloadStatusOperation(name=n, token=f"id-{n}") for n in names],
        exits=list(exits),
        state=state,
        state_message=message,
    )


def exit_of(name: str, code: int | None, reason: str = "", message: str = "") -> WorkloadStatusExit:
    if reason == "" and code not in (0, None):
        reason = "Error"
    return WorkloadStatusExit(name=name, token=f"id-{name}", exit_code=code, reason=reason, message=message)


def plan(name: str = "wl", image: str = "berth-test/busybox:local") -> WorkloadPlan:
    run = Container(name="default", image=image, execution=ContainerExecution(command=["true"]))
    return WorkloadPlan(name=name, host_network=True, containers=[run])


# -- status mapping --------------------------------------------------------------------------


def test_created_time_keeps_microseconds_of_docker_nanoseconds():
    assert mapping.parse_created("2026-11-23T19:48:51.123456789Z") == pytest.approx(1795463331.123456)
    assert mapping.parse_created("") is None
    assert mapping.parse_created("yesterday") is None


def test_exit_codes_above_128_name_the_signal():
    assert mapping.signal_of(137) == 9
    assert mapping.signal_of(143) == 15
    assert mapping.signal_of(3) is None
    assert mapping.signal_of(None) is None


def test_all_containers_running_is_running_with_identity():
    got = mapping.to_status(status(), "container")
    assert got.state is WorkloadState.RUNNING
    assert [c.name for c in got.containers] == ["default", "ray-head"]
    assert all(c.state is WorkloadState.RUNNING for c in got.containers)
    assert got.identity == {"container/default": "id-default", "container/ray-head": "id-ray-head"}
    assert got.labels[MANAGED_LABEL] == "true"
    assert got.reason == "" and got.exit_code is None


def test_run_container_comes_first_whatever_the_engine_order():
    got = mapping.to_status(status(names=("ray-head", "default")), "container")
    assert [c.name for c in got.containers] == ["default", "ray-head"]


def test_run_container_exiting_non_zero_fails_with_code_and_reason():
    got = mapping.to_status(status(RS.FAILED, exits=(exit_of("default", 3),)), "container")
    assert got.state is WorkloadState.FAILED
    assert got.exit_code == 3
    run = got.container("default")
    assert run is not None and run.state is WorkloadState.FAILED and run.exit_code == 3
    assert "exited with code 3" in got.reason and "'default'" in got.reason
    sidecar = got.container("ray-head")
    assert sidecar is not None and sidecar.state is WorkloadState.RUNNING


def test_unhealthy_with_a_crashed_sidecar_still_fails_and_the_rest_runs():
    # gpustack-runtime 0.2.6 says "Unhealthy" when Docker reports an empty restart policy
    got = mapping.to_status(status(RS.UNHEALTHY, exits=(exit_of("ray-head", 1),), message="Error"), "c")
    assert got.state is WorkloadState.FAILED
    assert got.container("default").state is WorkloadState.RUNNING  # type: ignore[union-attr]
    assert got.container("default").reason == ""  # type: ignore[union-attr]
    assert got.exit_code == 1
    assert "'ray-head'" in got.reason


def test_killed_container_records_the_signal():
    got = mapping.to_status(status(RS.FAILED, exits=(exit_of("default", 137),)), "c")
    assert got.container("default").signal == 9  # type: ignore[union-attr]


def test_every_container_exiting_zero_is_stopped():
    exits = (exit_of("default", 0), exit_of("ray-head", 0))
    got = mapping.to_status(status(RS.INACTIVE, exits=exits), "c")
    assert got.state is WorkloadState.STOPPED
    assert got.exit_code == 0


def test_sidecar_ending_cleanly_while_run_container_runs_is_a_failure():
    got = mapping.to_status(status(RS.INACTIVE, exits=(exit_of("ray-head", 0),)), "c")
    assert got.state is WorkloadState.FAILED
    assert "ray-head" in got.reason and "still run" in got.reason


def test_pending_and_initializing_states():
    pending = mapping.to_status(status(RS.PENDING, message="pulling image"), "c")
    assert pending.state is WorkloadState.PENDING and pending.reason == "pulling image"
    starting = mapping.to_status(status(RS.INITIALIZING), "c")
    assert starting.state is WorkloadState.STARTING


def test_unhealthy_without_exits_is_starting():
    got = mapping.to_status(status(RS.UNHEALTHY, message="health: starting"), "c")
    assert got.state is WorkloadState.STARTING
    assert got.reason == "health: starting"


def test_blocked_container_without_exit_code_is_pending_then_failed():
    blocked = exit_of("default", None, reason="ImagePullBackOff", message="back-off pulling image")
    got = mapping.to_status(status(RS.PENDING, names=("default",), exits=(blocked,)), "c")
    assert got.state is WorkloadState.PENDING
    assert "back-off pulling image" in got.reason
    failed = mapping.to_status(status(RS.FAILED, names=("default",), exits=(blocked,)), "c")
    assert failed.state is WorkloadState.FAILED


def test_exits_of_containers_outside_the_plan_are_ignored():
    pause = WorkloadStatusExit(name="wl-pause", token="p", exit_code=137, reason="Error")
    got = mapping.to_status(status(exits=(pause,)), "c")
    assert got.state is WorkloadState.RUNNING
    assert [c.name for c in got.containers] == ["default", "ray-head"]


def test_gpustack_failure_wins_over_running_containers():
    got = mapping.to_status(status(RS.FAILED, message="dead container"), "c")
    assert got.state is WorkloadState.FAILED


@pytest.mark.parametrize(
    ("state", "expected"),
    [(RS.FAILED, WorkloadState.FAILED), (RS.UNKNOWN, WorkloadState.UNKNOWN), (RS.INACTIVE, WorkloadState.STOPPED)],
)
def test_no_containers_at_all(state, expected):
    got = mapping.to_status(status(state, names=()), "c")
    assert got.containers == [] and got.state is expected


def test_tokens_and_exited_containers():
    found = status(RS.FAILED, exits=(exit_of("ray-head", 2),))
    assert mapping.token_of(found, "ray-head") == "id-ray-head"
    assert mapping.token_of(found, "nope") is None
    assert mapping.has_exited(found, "ray-head")
    assert not mapping.has_exited(found, "default")


def test_every_runtime_state_has_a_live_mapping():
    assert set(mapping.LIVE_STATE) == set(RS)


# -- errors ------------------------------------------------------------------------------------


def test_engine_down_message_names_the_socket_and_the_fix():
    message = errors.unavailable_message("docker")
    address = errors.engine_address("docker")
    assert message == f"no container engine reachable at {address}; start Docker or choose --deployer process"
    assert not address.startswith("http+")
    assert "Podman" in errors.unavailable_message("podman")
    assert "Kubernetes API" in errors.unavailable_message("kubernetes")
    assert "GPUSTACK_RUNTIME_DEPLOY=auto" in errors.unavailable_message("auto")


def test_unsupported_error_becomes_deployer_unavailable():
    err = errors.translate_create_error(UnsupportedError("No available deployer."), plan())
    assert isinstance(err, DeployerUnavailable)
    assert str(err).startswith("no container engine reachable at ")


def test_async_wrapper_is_seen_through():
    try:
        try:
            raise UnsupportedError("Docker is not supported in the current environment.")
        except UnsupportedError as inner:
            raise OperationError("Asynchronous workload creation failed.") from inner
    except OperationError as outer:
        err = errors.translate_create_error(outer, plan())
    assert isinstance(err, DeployerUnavailable)


class ImageNotFound(Exception):
    """Stands in for docker.errors.ImageNotFound / podman.errors.ImageNotFound (matched by name)."""


def test_missing_image_names_the_image():
    try:
        try:
            raise ImageNotFound("No such image: berth-test/nope:1")
        except ImageNotFound as inner:
            raise OperationError("Asynchronous workload creation failed.") from inner
    except OperationError as outer:
        err = errors.translate_create_error(outer, plan(image="berth-test/nope:1"))
    assert isinstance(err, InvalidWorkload)
    assert "'berth-test/nope:1'" in str(err) and "not present locally" in str(err)


def test_failed_pull_names_the_image():
    exc = OperationError("Failed to pull image berth-test/nope:1: Docker Server Error: no such host")
    err = errors.translate_create_error(exc, plan(image="berth-test/nope:1"))
    assert isinstance(err, InvalidWorkload) and "berth-test/nope:1" in str(err)


def test_missing_pause_image_points_at_the_setting():
    pause = errors.pause_image()
    exc = OperationError(f"Failed to pull image {pause}: Docker Server Error: no such host")
    err = errors.translate_create_error(exc, plan())
    assert isinstance(err, InvalidWorkload)
    assert "GPUSTACK_RUNTIME_DOCKER_PAUSE_IMAGE" in str(err) and pause in str(err)


def test_missing_executable_is_an_invalid_workload():
    exc = OperationError('Failed to create workload wl: OCI runtime create failed: exec: "vllm": '
                         "executable file not found in $PATH")
    err = errors.translate_create_error(exc, plan())
    assert isinstance(err, InvalidWorkload) and "execution.command" in str(err)


def test_value_error_is_an_invalid_workload():
    err = errors.translate_create_error(ValueError("Container 'default' is missing an image."), plan())
    assert isinstance(err, InvalidWorkload) and "missing an image" in str(err)


def test_connection_errors_mean_the_engine_is_down():
    class ConnectionError(Exception):  # noqa: A001 - named like requests' own
        pass

    try:
        try:
            raise ConnectionError("('Connection aborted.', FileNotFoundError(2))")
        except ConnectionError as inner:
            raise OperationError("Failed to list containers for workload wl") from inner
    except OperationError as outer:
        err = errors.translate_error(outer, "read workload 'wl'")
    assert isinstance(err, DeployerUnavailable)


def test_other_operation_errors_keep_the_engine_words():
    err = errors.translate_error(OperationError("Failed to delete volumes: in use"), "delete 'wl'")
    assert type(err) is DeployerError
    assert "Failed to delete volumes: in use" in str(err)


def test_names():
    check_name("workload", "qwen-0.5b_instance-1")
    with pytest.raises(ValueError, match="64 characters.*at most 63"):
        check_name("workload", "x" * 64)
    with pytest.raises(ValueError, match="not a valid label value"):
        check_name("workload", "bad name")
    with pytest.raises(ValueError, match="no name"):
        check_name("workload", "")


# -- logs --------------------------------------------------------------------------------------


def test_slices_are_inclusive_and_past_the_end_is_empty():
    data = b"0123456789"
    assert logs.slice_log(data).data == data
    chunk = logs.slice_log(data, 2, 4)
    assert (chunk.data, chunk.start, chunk.total, chunk.end) == (b"234", 2, 10, 4)
    assert logs.slice_log(data, 8, 100).data == b"89"
    past = logs.slice_log(data, 50)
    assert past.data == b"" and past.total == 10
    assert logs.slice_log(data, 5, 3).data == b""
    with pytest.raises(ValueError):
        logs.slice_log(data, -1)


def test_to_bytes_accepts_what_engines_return():
    assert logs.to_bytes(b"a") == b"a"
    assert logs.to_bytes("é") == "é".encode()
    assert logs.to_bytes(None) == b""
    assert logs.to_bytes(iter([b"a", "b"])) == b"ab"


def test_last_lines():
    assert logs.last_lines(b"1\n2\n3\n", 2) == "2\n3"
    assert logs.last_lines(b"", 5) == ""


def test_log_cache_keeps_the_most_recent():
    cache = logs.LogCache(entries=2)
    cache.put("a", b"1")
    cache.put("b", b"2")
    assert cache.get("a") == b"1"
    cache.put("c", b"3")
    assert cache.get("b") is None and cache.get("a") == b"1" and cache.get("c") == b"3"


def test_skip_bytes_across_chunks():
    assert b"".join(logs.skip_bytes([b"abc", b"def", b"g"], 4)) == b"efg"
    assert b"".join(logs.skip_bytes([b"abc"], 0)) == b"abc"


class SlowStream:
    """A follow stream that yields its chunks, then blocks until closed."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        self.closed.wait(10)

    def close(self) -> None:
        self.closed.set()


def test_follow_honours_stop_while_the_stream_is_silent():
    stream = SlowStream([b"hello ", b"world"])
    stop = threading.Event()
    got = []
    started = time.monotonic()
    for chunk in logs.follow_stream(lambda: stream, start=2, poll=0.05, stop=stop):
        got.append(chunk)
        if b"".join(got) == b"llo world":
            stop.set()
    assert b"".join(got) == b"llo world"
    assert stream.closed.is_set()
    assert time.monotonic() - started < 5


def test_follow_ends_with_the_stream_and_reraises_its_error():
    assert b"".join(logs.follow_stream(lambda: iter([b"a", b"b"]), poll=0.05)) == b"ab"

    def broken() -> Iterator[bytes]:
        yield b"x"
        raise RuntimeError("stream broke")

    with pytest.raises(RuntimeError, match="stream broke"):
        list(logs.follow_stream(broken, poll=0.05))


# -- the deployer over a fake gpustack-runtime -------------------------------------------------


class FakeRuntime:
    """Just enough of gpustack_runtime.deployer's module-level API."""

    def __init__(self) -> None:
        self.plans: dict[str, WorkloadPlan] = {}
        self.statuses: dict[str, RuntimeStatus] = {}
        self.log_data: dict[str, bytes] = {}
        self.log_reads = 0
        self.fail_create: Exception | None = None
        self.deleted: list[tuple[str, int | None]] = []

    def create_workload(self, workload: WorkloadPlan) -> None:
        if self.fail_create is not None:
            raise self.fail_create
        workload.labels["runtime.gpustack.ai/workload"] = workload.name  # it edits what it gets
        self.plans[workload.name] = workload
        names = tuple(c.name for c in workload.containers)
        self.statuses[workload.name] = status(names=names, name=workload.name)

    def get_workload(self, name, namespace=None):
        return self.statuses.get(name)

    def list_workloads(self, namespace=None, labels=None):
        return [s for s in self.statuses.values() if all(s.labels.get(k) == v for k, v in (labels or {}).items())]

    def logs_workload(self, name, namespace=None, token=None, follow=False, **_):
        self.log_reads += 1
        data = self.log_data.get(token, b"")
        return iter([data]) if follow else data

    def delete_workload(self, name, namespace=None, grace_period_seconds=None):
        self.deleted.append((name, grace_period_seconds))
        self.plans.pop(name, None)
        return self.statuses.pop(name, None)


@pytest.fixture
def fake(monkeypatch) -> FakeRuntime:
    runtime = FakeRuntime()
    monkeypatch.setattr(container_module, "runtime", runtime)
    monkeypatch.setattr(container_module, "remove_leftover_volumes", lambda name: [])
    return runtime


def test_registry_builds_it():
    assert isinstance(get_deployer("container"), ContainerDeployer)


def test_create_labels_a_copy_and_leaves_the_plan_alone(fake):
    given = plan()
    got = ContainerDeployer(image_pull_policy="never").create(given)
    assert got.state is WorkloadState.RUNNING and got.deployer == "container"
    sent = fake.plans["wl"]
    assert sent is not given
    assert sent.labels[MANAGED_LABEL] == "true" and sent.labels[INSTANCE_LABEL] == "wl"
    assert sent.containers[0].image_pull_policy is ContainerImagePullPolicyEnum.NEVER
    assert given.labels is None


def test_create_refuses_an_existing_name(fake):
    deployer = ContainerDeployer()
    deployer.create(plan())
    with pytest.raises(WorkloadExists, match="already exists"):
        deployer.create(plan())


def test_failed_create_cleans_up_and_explains(fake):
    fake.fail_create = UnsupportedError("No available deployer.")
    with pytest.raises(DeployerUnavailable):
        ContainerDeployer().create(plan())
    assert fake.deleted == [("wl", 0)]


def test_bad_pull_policy_is_named():
    with pytest.raises(DeployerError, match="image_pull_policy 'sometimes'"):
        ContainerDeployer(image_pull_policy="sometimes")


def test_unknown_workload_and_container(fake):
    deployer = ContainerDeployer()
    with pytest.raises(WorkloadNotFound):
        deployer.get("nope")
    deployer.create(plan())
    with pytest.raises(WorkloadNotFound, match="no container 'ray-head'.*default"):
        deployer.logs("wl", container="ray-head")


def test_logs_by_range_and_cache_once_exited(fake):
    deployer = ContainerDeployer()
    deployer.create(plan())
    fake.log_data["id-default"] = b"line one\nline two\n"
    assert deployer.logs("wl", start=5, end=7).data == b"one"
    assert deployer.logs("wl").total == 18
    assert fake.log_reads == 2  # running: read every time
    fake.statuses["wl"] = status(RS.FAILED, names=("default",), exits=(exit_of("default", 4),))
    assert deployer.logs("wl", start=9).data == b"line two\n"
    fake.log_data["id-default"] = b"changed"
    assert deployer.logs("wl").data == b"line one\nline two\n"  # exited: from the cache


def test_failed_status_quotes_the_last_log_lines(fake):
    deployer = ContainerDeployer()
    deployer.create(plan())
    fake.statuses["wl"] = status(RS.FAILED, names=("default",), exits=(exit_of("default", 4),))
    fake.log_data["id-default"] = b"starting\nboom: no model here\n"
    got = deployer.get("wl")
    assert got.state is WorkloadState.FAILED and got.exit_code == 4
    assert "exited with code 4" in got.reason and "boom: no model here" in got.reason


def test_list_keeps_only_berth_workloads(fake):
    deployer = ContainerDeployer()
    deployer.create(plan("b"))
    deployer.create(plan("a"))
    foreign = status(name="theirs")
    foreign.labels = {}
    fake.statuses["theirs"] = foreign
    assert [s.name for s in deployer.list()] == ["a", "b"]


def test_follow_reads_the_engine_stream(fake):
    deployer = ContainerDeployer()
    deployer.create(plan())
    fake.log_data["id-default"] = b"abcdef"
    assert b"".join(deployer.follow("wl", start=3, poll=0.05)) == b"def"


def test_delete_rounds_the_grace_up_and_reports_stopped(fake):
    deployer = ContainerDeployer()
    deployer.create(plan())
    last = deployer.delete("wl", timeout=2.5)
    assert fake.deleted == [("wl", 3)]
    assert last is not None and last.state is WorkloadState.STOPPED
    assert deployer.delete("wl") is None
