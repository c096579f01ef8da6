"""The process deployer with small python/sh commands: env, logs, exits, signals, stop, adoption.

Every test runs in its own run directory and the ``run_dir`` fixture fails the test if any
process that mentions it (shim, command, or a descendant carrying its tag) is still alive.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpustack_runtime.deployer import (
    Container,
    ContainerEnv,
    ContainerExecution,
    ContainerPort,
    ContainerProfileEnum,
    ContainerResources,
    WorkloadPlan,
)

from berth.deployers import INSTANCE_LABEL, MANAGED_LABEL, get_deployer
from berth.deployers._stdlib import proc
from berth.deployers.base import (
    DeployerError,
    InvalidWorkload,
    WorkloadExists,
    WorkloadNotFound,
)
from berth.deployers.process import ProcessDeployer
from berth.schemas.workload import WorkloadState, WorkloadStatus
from tests.support.processes import alive
from tests.support.waiting import wait_for

pytestmark = pytest.mark.subprocess  # starts processes: not in make test-unit

SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(300)\n"


# -- helpers -------------------------------------------------------------------------------


def container(
    name: str = "default",
    *,
    command: list[str] | None = None,
    args: list[str] | None = None,
    script: str | None = None,
    env: dict[str, str] | None = None,
    resources: dict[str, str] | None = None,
    ports: list[int] | None = None,
) -> Container:
    return Container(
        image="local/none",
        name=name,
        execution=ContainerExecution(command=command, command_script=script, args=args, privileged=True),
        envs=[ContainerEnv(name=k, value=v) for k, v in (env or {}).items()],
        resources=ContainerResources(**(resources or {})),
        ports=[ContainerPort(internal=p) for p in ports or []],
    )


def py(code: str, name: str = "default", **kwargs: object) -> Container:
    return container(name, command=["python", "-c", textwrap.dedent(code)], **kwargs)  # type: ignore[arg-type]


def plan(name: str, *containers: Container, managed: bool = True) -> WorkloadPlan:
    labels = {MANAGED_LABEL: "true", INSTANCE_LABEL: name} if managed else {MANAGED_LABEL: ""}  # berth labels the rest
    return WorkloadPlan(name=name, labels=labels, host_network=True, containers=list(containers))


def log_text(d: ProcessDeployer, name: str, container: str = "default") -> str:
    return d.logs(name, container=container).data.decode()


def wait_state(d: ProcessDeployer, name: str, *states: WorkloadState, timeout: float = 15.0) -> WorkloadStatus:
    try:
        wait_for(lambda: d.get(name).state in states, f"{name} to reach {states}", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {d.get(name)}") from None
    return d.get(name)


def started(d: ProcessDeployer, name: str) -> WorkloadStatus:
    """The status once every shim of ``name`` has reported (``create`` does not wait for them)."""
    wait_for(lambda: all(c.state is not WorkloadState.PENDING for c in d.get(name).containers),
             what=f"the shims of {name} to start")
    return d.get(name)


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """A run directory; after the test, no process may mention it (killed, then failed)."""
    path = tmp_path / "run"
    yield path
    left: set[int] = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = proc.mentioning(str(path))
        if not left:
            return
        time.sleep(0.1)
    described = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in left if alive(pid)}
    proc.send(left, signal.SIGKILL)
    pytest.fail(f"processes left behind: {described}")


@pytest.fixture
def deployer(run_dir: Path) -> Iterator[ProcessDeployer]:
    d = ProcessDeployer(run_dir)
    yield d
    for status in d.list():
        d.delete(status.name, timeout=2)


# -- create, env, devices ------------------------------------------------------------------


def test_registry_builds_it(run_dir: Path) -> None:
    d = get_deployer("process", run_dir=str(run_dir))
    assert isinstance(d, ProcessDeployer) and d.name == "process"


def test_env_and_visible_devices(deployer: ProcessDeployer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_TEST_INHERITED", "from-berth")
    code = """
        import os, shutil
        for k in ("FOO", "CUDA_VISIBLE_DEVICES", "BERTH_TEST_INHERITED"):
            print(k, os.environ.get(k))
        print("PATH0", os.environ["PATH"].split(os.pathsep)[0])
    """
    resources = {"nvidia.com/devices": "GPU-aaaa-1111,GPU-bbbb-2222", "cpu": "2"}
    env = {"FOO": "bar", "CUDA_VISIBLE_DEVICES": "9"}
    deployer.create(plan("envs", py(code, env=env, resources=resources)))
    assert started(deployer, "envs").state in (WorkloadState.RUNNING, WorkloadState.STOPPED)
    wait_state(deployer, "envs", WorkloadState.STOPPED)
    out = log_text(deployer, "envs")
    assert "FOO bar" in out
    assert "CUDA_VISIBLE_DEVICES GPU-aaaa-1111,GPU-bbbb-2222" in out  # resources win over env
    assert "BERTH_TEST_INHERITED from-berth" in out
    assert f"PATH0 {os.path.dirname(sys.executable)}" in out


def test_inherit_env_off(run_dir: Path) -> None:
    d = ProcessDeployer(run_dir, inherit_env=False)
    d.create(plan("bare", py("import json, os; print(json.dumps(sorted(os.environ)))", env={"ONLY": "1"})))
    wait_state(d, "bare", WorkloadState.STOPPED)
    names = set(json.loads(log_text(d, "bare")))
    assert names - {"LC_CTYPE"} == {"ONLY", "PATH", "BERTH_PROCESS_TAG"}  # python may add LC_CTYPE
    d.delete("bare")


def test_command_script_gets_args_as_positional_parameters(deployer: ProcessDeployer) -> None:
    script = 'echo "n=$# first=$1 second=$2"\nexec "$@"\n'
    c = container(script=script, args=["echo", "two words"])
    deployer.create(plan("script", c))
    wait_state(deployer, "script", WorkloadState.STOPPED)
    assert log_text(deployer, "script") == "n=2 first=echo second=two words\ntwo words\n"


def test_command_script_with_shebang_uses_its_interpreter(deployer: ProcessDeployer) -> None:
    script = f"#!{sys.executable}\nimport sys\nprint('argv', sys.argv[1:])\n"
    deployer.create(plan("shebang", container(script=script, args=["a", "b c"])))
    wait_state(deployer, "shebang", WorkloadState.STOPPED)
    assert log_text(deployer, "shebang") == "argv ['a', 'b c']\n"


# -- refusals -------------------------------------------------------------------------------


def test_missing_executable_is_named(deployer: ProcessDeployer, run_dir: Path) -> None:
    with pytest.raises(InvalidWorkload, match="no-such-binary-xyz"):
        deployer.create(plan("missing", container(command=["no-such-binary-xyz", "--flag"])))
    assert not (run_dir / "missing").exists()


def test_bound_port_is_named(deployer: ProcessDeployer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(InvalidWorkload, match=f"port {port}/tcp"):
            deployer.create(plan("taken", py(SLEEPER, ports=[port])))


def test_exists_init_and_bad_names(deployer: ProcessDeployer) -> None:
    deployer.create(plan("twice", py(SLEEPER)))
    with pytest.raises(WorkloadExists):
        deployer.create(plan("twice", py(SLEEPER)))
    init = py("print(1)")
    init.profile = ContainerProfileEnum.INIT
    with pytest.raises(InvalidWorkload, match="Init"):
        deployer.create(plan("init", init, py(SLEEPER, name="main")))
    with pytest.raises(InvalidWorkload, match="workload name"):
        deployer.create(plan("../escape", py(SLEEPER)))
    with pytest.raises(InvalidWorkload, match="execution.command"):
        deployer.create(plan("nocmd", container()))
    deployer.delete("twice", timeout=2)


def test_missing_interpreter_is_refused_before_anything_starts(deployer: ProcessDeployer, run_dir: Path) -> None:
    bad = container("ray-head", script="#!/nonexistent/interpreter\n")
    with pytest.raises(InvalidWorkload, match="ray-head.*'/nonexistent/interpreter'"):
        deployer.create(plan("rollback", py(SLEEPER), bad))
    assert not (run_dir / "rollback").exists()


def test_failed_exec_fails_the_workload_and_stops_the_rest(deployer: ProcessDeployer, tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-program"
    garbage.write_bytes(b"\x00\x01 neither ELF nor #!")
    garbage.chmod(0o755)  # passes every check before the start; only exec(2) can refuse it
    deployer.create(plan("noexec", py(SLEEPER), container("ray-head", command=[str(garbage)])))
    wait_state(deployer, "noexec", WorkloadState.FAILED)
    main = lambda: deployer.get("noexec").container("default")  # noqa: E731
    wait_for(lambda: main().state is WorkloadState.STOPPED, what="the started container to be stopped")
    failed = deployer.get("noexec")
    head = failed.container("ray-head")
    assert failed.state is WorkloadState.FAILED and failed.reason == head.reason
    assert "cannot execute" in head.reason and head.exit_code == 126
    assert not alive(main().pid)
    assert deployer.delete("noexec", timeout=2) is not None


def test_a_supervisor_that_dies_unreported_fails_the_workload(run_dir: Path) -> None:
    d = ProcessDeployer(run_dir, python="/bin/false")  # "starts" and exits 1 without a word
    d.create(plan("dead", py(SLEEPER)))
    failed = wait_state(d, "dead", WorkloadState.FAILED)
    assert "supervisor" in failed.reason
    assert d.delete("dead", timeout=2) is not None and not (run_dir / "dead").exists()


def test_a_supervisor_that_cannot_be_run_is_refused_at_once(run_dir: Path) -> None:
    d = ProcessDeployer(run_dir, python=str(run_dir.parent / "no-such-python"))
    with pytest.raises(DeployerError, match="cannot start its supervisor"):
        d.create(plan("never", py(SLEEPER)))
    assert not (run_dir / "never").exists()


def test_a_failed_spawn_stops_the_shims_already_started(
    deployer: ProcessDeployer, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from berth.deployers.process import deployer as module

    real = module.spawn

    def second_fails(python: str, workload_dir: str, spec: object) -> object:
        if getattr(spec, "container") == "ray-head":
            raise DeployerError("container 'ray-head': cannot start its supervisor: out of processes")
        return real(python, workload_dir, spec)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "spawn", second_fails)
    with pytest.raises(DeployerError, match="out of processes"):
        deployer.create(plan("half", py(SLEEPER), py(SLEEPER, name="ray-head")))
    assert not (run_dir / "half").exists()  # and the run_dir fixture finds no process left


def test_delete_right_after_create_leaves_nothing(deployer: ProcessDeployer) -> None:
    for i in range(4):  # the run_dir fixture fails the test if any process is left
        deployer.create(plan(f"brief{i}", py(SLEEPER)))
        last = deployer.delete(f"brief{i}", timeout=5)
        assert last is not None and last.state is WorkloadState.STOPPED
    assert deployer.list() == []


def test_a_normal_stop_searches_no_process_table(deployer: ProcessDeployer, monkeypatch: pytest.MonkeyPatch) -> None:
    deployer.create(plan("cheap", py(SLEEPER)))
    pid = started(deployer, "cheap").containers[0].pid

    def search(**_: object) -> set[int]:
        raise AssertionError("the stop searched /proc although the shim reaped everything")

    monkeypatch.setattr(proc, "members", search)
    last = deployer.delete("cheap", timeout=5)
    assert last is not None and last.state is WorkloadState.STOPPED and not alive(pid)


# -- logs -----------------------------------------------------------------------------------


def test_logs_complete_ordered_and_ranged_while_growing(deployer: ProcessDeployer) -> None:
    code = """
        import sys, time
        for i in range(400):
            stream = sys.stdout if i % 2 else sys.stderr
            stream.write(f"line {i:05d}\\n"); stream.flush()
            if i % 50 == 0:
                time.sleep(0.05)
    """
    deployer.create(plan("logs", py(code)))
    seen = bytearray()
    growing_reads = 0
    while True:
        chunk = deployer.logs("logs", start=len(seen), end=len(seen) + 999)
        assert chunk.start == len(seen) and len(chunk.data) <= 1000
        seen += chunk.data
        if not chunk.data and deployer.get("logs").state.terminal:
            break
        growing_reads += bool(chunk.data)
        time.sleep(0.01)
    full = deployer.logs("logs")
    assert bytes(seen) == full.data and full.total == len(full.data)
    assert full.data.decode().splitlines() == [f"line {i:05d}" for i in range(400)]
    assert growing_reads > 1
    middle = deployer.logs("logs", start=11, end=21)
    assert middle.data == full.data[11:22] and middle.end == 21
    past = deployer.logs("logs", start=full.total + 10)
    assert past.data == b"" and past.total == full.total
    with pytest.raises(WorkloadNotFound):
        deployer.logs("logs", container="nope")
    with pytest.raises(WorkloadNotFound):
        deployer.logs("nope")


def test_sidecar_is_a_second_process_with_its_own_log(deployer: ProcessDeployer) -> None:
    main = py("import time; print('main', flush=True); time.sleep(300)")
    side = py("import time; print('side', flush=True); time.sleep(300)", name="ray-head")
    deployer.create(plan("pair", main, side))
    status = started(deployer, "pair")
    pids = {c.name: c.pid for c in status.containers}
    assert set(pids) == {"default", "ray-head"} and pids["default"] != pids["ray-head"]
    wait_for(lambda: log_text(deployer, "pair", "ray-head") == "side\n", what="sidecar log")
    wait_for(lambda: log_text(deployer, "pair") == "main\n", what="main log")
    assert deployer.get("pair").state is WorkloadState.RUNNING
    last = deployer.delete("pair", timeout=5)
    assert last is not None and last.state is WorkloadState.STOPPED
    assert not any(alive(p) for p in pids.values())


def test_follow_yields_until_the_end(deployer: ProcessDeployer) -> None:
    deployer.create(plan("follow", py("import time\nfor i in range(5): print(i, flush=True); time.sleep(0.05)")))
    assert b"".join(deployer.follow("follow", poll=0.05)) == b"0\n1\n2\n3\n4\n"


# -- exits and signals ----------------------------------------------------------------------


def test_exit_codes(deployer: ProcessDeployer) -> None:
    deployer.create(plan("ok", py("print('bye')")))
    deployer.create(plan("bad", py("import sys; sys.exit(3)")))
    ok = wait_state(deployer, "ok", WorkloadState.STOPPED)
    bad = wait_state(deployer, "bad", WorkloadState.FAILED)
    assert ok.exit_code == 0 and ok.containers[0].signal is None
    assert bad.exit_code == 3 and "code 3" in bad.reason


def test_instant_exits_are_recorded(deployer: ProcessDeployer) -> None:
    for i in range(8):
        deployer.create(plan(f"quick{i}", container(command=["true"] if i % 2 else ["false"])))
    for i in range(8):
        status = wait_state(deployer, f"quick{i}", WorkloadState.STOPPED, WorkloadState.FAILED)
        assert status.exit_code == (0 if i % 2 else 1)


def test_signal_from_outside_is_reported(deployer: ProcessDeployer) -> None:
    deployer.create(plan("victim", py(SLEEPER)))
    pid = started(deployer, "victim").containers[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    failed = wait_state(deployer, "victim", WorkloadState.FAILED)
    assert failed.containers[0].signal == signal.SIGKILL
    assert failed.exit_code == 128 + signal.SIGKILL and "SIGKILL" in failed.reason


def test_stop_within_grace_uses_sigterm(deployer: ProcessDeployer) -> None:
    code = """
        import signal, sys, time
        def bye(*_): print('got TERM', flush=True); sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print('up', flush=True); time.sleep(300)
    """
    deployer.create(plan("polite", py(code)))
    wait_for(lambda: "up" in log_text(deployer, "polite"), what="start")
    last = deployer.delete("polite", timeout=20)
    assert last is not None and last.state is WorkloadState.STOPPED
    assert last.exit_code == 0 and last.containers[0].signal is None


def test_sigkill_after_grace_for_term_ignoring_child(deployer: ProcessDeployer) -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('up', flush=True); time.sleep(300)
    """
    deployer.create(plan("stubborn", py(code)))
    status = started(deployer, "stubborn")
    wait_for(lambda: "up" in log_text(deployer, "stubborn"), what="start")
    last = deployer.delete("stubborn", timeout=0.5)
    assert last is not None and last.state is WorkloadState.STOPPED
    assert last.containers[0].signal == signal.SIGKILL
    assert not alive(status.containers[0].pid)


def test_grandchildren_are_killed_on_stop(deployer: ProcessDeployer) -> None:
    code = """
        import os, subprocess, sys, time
        sys.stdout.write(f"{os.getpid()}\\n")
        same_group = subprocess.Popen(["sleep", "300"])
        own_session = subprocess.Popen(["sleep", "301"], start_new_session=True)
        print(same_group.pid, own_session.pid, flush=True)
        time.sleep(300)
    """
    deployer.create(plan("family", py(code)))
    wait_for(lambda: len(log_text(deployer, "family").split()) == 3, what="children")
    pids = [int(p) for p in log_text(deployer, "family").split()]
    assert all(alive(p) for p in pids)
    deployer.delete("family", timeout=5)
    assert not any(alive(p) for p in pids)


def test_leftovers_die_with_the_main_process(deployer: ProcessDeployer) -> None:
    script = "sleep 300 &\necho $!\nexit 0\n"
    deployer.create(plan("orphans", container(script=script)))
    done = wait_state(deployer, "orphans", WorkloadState.STOPPED)
    assert done.exit_code == 0
    orphan = int(log_text(deployer, "orphans"))
    wait_for(lambda: not alive(orphan), what="orphan to be killed")


# -- durability and adoption ----------------------------------------------------------------


def test_second_deployer_adopts_after_the_first_is_dropped(run_dir: Path) -> None:
    first = ProcessDeployer(run_dir)
    first.create(plan("durable", py(SLEEPER)))
    created = started(first, "durable")
    del first
    second = ProcessDeployer(run_dir)
    listed = second.list()
    assert [s.name for s in listed] == ["durable"]
    adopted = second.adopt("durable", created.identity)
    assert adopted.state is WorkloadState.RUNNING
    assert adopted.containers[0].pid == created.containers[0].pid
    assert adopted.labels[INSTANCE_LABEL] == "durable"
    second.delete("durable", timeout=5)
    assert second.list() == []
    assert not alive(created.containers[0].pid)


def test_list_only_returns_managed_workloads(deployer: ProcessDeployer) -> None:
    deployer.create(plan("mine", py(SLEEPER)))
    deployer.create(plan("foreign", py(SLEEPER), managed=False))
    assert [s.name for s in deployer.list()] == ["mine"]
    assert started(deployer, "foreign").state is WorkloadState.RUNNING
    deployer.delete("foreign", timeout=5)
    with pytest.raises(WorkloadNotFound):
        deployer.get("foreign")
    assert deployer.delete("foreign") is None


_CREATOR = """
import sys, time
from berth.deployers.process import ProcessDeployer
from gpustack_runtime.deployer import Container, ContainerExecution, WorkloadPlan
d = ProcessDeployer(sys.argv[1])
for name in ("a", "b"):
    code = "import time\\nwhile True: print('tick', flush=True); time.sleep(0.1)"
    c = Container(image="none", name="default", execution=ContainerExecution(command=["python", "-c", code]))
    d.create(WorkloadPlan(name=name, labels={"berth.io/managed": "true"}, containers=[c]))
print("created", flush=True)
time.sleep(300)
"""


def test_kill_9_of_the_creating_process_then_readopt(run_dir: Path) -> None:
    creator = subprocess.Popen(
        [sys.executable, "-c", _CREATOR, str(run_dir)], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert creator.stdout is not None and creator.stdout.readline() == b"created\n"
    finally:
        os.killpg(creator.pid, signal.SIGKILL)
        creator.wait()
    fresh = ProcessDeployer(run_dir)
    assert {s.name for s in fresh.list()} == {"a", "b"}  # its shims outlive it, starting or not
    statuses = {name: started(fresh, name) for name in ("a", "b")}
    assert all(s.state is WorkloadState.RUNNING for s in statuses.values())
    size = fresh.logs("a").total
    wait_for(lambda: fresh.logs("a").total > size, what="log to keep growing")
    pids = [s.containers[0].pid for s in statuses.values()]
    for name in statuses:
        assert fresh.delete(name, timeout=5) is not None
    assert not any(alive(p) for p in pids)


def test_killed_shim_leaves_the_process_owned(deployer: ProcessDeployer, run_dir: Path) -> None:
    deployer.create(plan("lonely", py(SLEEPER)))
    status = started(deployer, "lonely")
    state = json.loads((run_dir / "lonely" / "default.state").read_text())
    os.kill(state["shim_pid"], signal.SIGKILL)
    wait_for(lambda: not alive(state["shim_pid"]), what="shim to die")
    now = deployer.get("lonely")
    assert now.state is WorkloadState.RUNNING and "supervisor" in now.containers[0].reason
    last = deployer.delete("lonely", timeout=5)
    assert last is not None and last.state is WorkloadState.STOPPED
    assert not alive(status.containers[0].pid)


# -- pure pieces ----------------------------------------------------------------------------


def test_masked_argv_hides_secret_option_values() -> None:
    from berth.deployers.process._spec import masked_argv

    argv = ["vllm", "serve", "m", "--api-key", "s3cret", "--hf-token=abc", "--port", "8000"]
    assert masked_argv(argv) == ["vllm", "serve", "m", "--api-key", "***", "--hf-token=***", "--port", "8000"]


def test_search_path_puts_bin_dirs_first_once() -> None:
    from berth.deployers.process._spec import search_path

    assert search_path(["/venv/bin"], "/usr/bin:/venv/bin::/bin") == "/venv/bin:/usr/bin:/bin"


def test_status_without_record() -> None:
    from berth.deployers.process._state import ContainerState
    from berth.deployers.process._status import container_status

    assert container_status("default", None).state is WorkloadState.PENDING
    gone = ContainerState(shim_pid=2**22 + 1, shim_start=1, pid=2**22 + 2, pid_start=1)
    status = container_status("default", gone)
    assert status.state is WorkloadState.FAILED and "exit status unknown" in status.reason
    error = ContainerState(exit_code=127, finished_at=1.0, error="cannot execute 'x': No such file")
    assert container_status("default", error).reason.startswith("cannot execute")


def test_bad_log_range(deployer: ProcessDeployer) -> None:
    deployer.create(plan("ranges", py("print('x')")))
    with pytest.raises(ValueError, match="start"):
        deployer.logs("ranges", start=-1)
    wait_state(deployer, "ranges", WorkloadState.STOPPED)
    deployer.delete("ranges")
