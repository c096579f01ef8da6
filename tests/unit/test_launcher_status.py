"""Launcher records: state files and the statuses berth reports for them."""

from __future__ import annotations

import os
import signal

import pytest

from berth.deployers._logfile import read_range, read_tail
from berth.deployers._stdlib.names import check_name
from berth.deployers.base import DeployerError, DeployerUnavailable
from berth.deployers.launcher import LauncherDeployer, vllm_missing
from berth.deployers.launcher import _records as rec
from berth.deployers.launcher._spawn import DaemonHandle
from berth.deployers.launcher._status import record_state, with_tail, workload_status
from berth.schemas.workload import WorkloadState


def _record(**kw) -> rec.InstanceRecord:
    base = dict(name="a", pid=123, log="/nowhere.log", created_at=1.0, labels={"k": "v"})
    base.update(kw)
    return rec.InstanceRecord(**base)


@pytest.mark.parametrize(
    "fields,state,words",
    [
        ({}, WorkloadState.RUNNING, ""),  # the contract: live is running everywhere
        ({"finished_at": 2.0, "exit_code": 0}, WorkloadState.STOPPED, "code 0"),
        ({"finished_at": 2.0, "signal": 15, "stop_requested": True}, WorkloadState.STOPPED, "by berth"),
        ({"finished_at": 2.0, "exit_code": 1, "stop_requested": True}, WorkloadState.STOPPED, "by berth"),
        ({"finished_at": 2.0, "exit_code": 3}, WorkloadState.FAILED, "code 3"),
        ({"finished_at": 2.0, "signal": 9}, WorkloadState.FAILED, "SIGKILL (9)"),
        ({"finished_at": 2.0}, WorkloadState.FAILED, "daemon ended"),
    ],
)
def test_record_state(fields, state, words) -> None:
    got, reason = record_state(_record(**fields))
    assert got is state and words in reason


def test_ended_decodes_wait_status() -> None:
    exited = _record()
    exited.ended(3 << 8, 5.0)
    assert (exited.exit_code, exited.signal, exited.finished_at) == (3, None, 5.0)
    killed = _record()
    killed.ended(signal.SIGKILL, 6.0)
    assert (killed.exit_code, killed.signal) == (None, 9)


def test_failure_reason_quotes_log_tail() -> None:
    tail = "\n".join(f"line {i}" for i in range(30)) + "\n\n"
    reason = with_tail("boom", tail)
    assert reason.startswith("boom; last log lines:\nline 20") and reason.endswith("line 29")
    assert with_tail("boom", "") == "boom"
    status = workload_status(_record(finished_at=2.0, exit_code=2), deployer="launcher", run_dir="/r", tail="oops")
    assert status.state is WorkloadState.FAILED and status.reason.endswith("oops")
    assert status.containers[0].exit_code == 2 and status.exit_code == 2
    assert status.identity == {"run_dir": "/r", "pid": "123", "log": "/nowhere.log"}
    assert status.labels == {"k": "v"}


def test_state_files_round_trip(tmp_path) -> None:
    state_dir = str(tmp_path)
    assert rec.list_records(state_dir) == []
    rec.write_record(state_dir, _record(name="b"))
    rec.write_record(state_dir, _record(name="a", exit_code=1, finished_at=3.0))
    (tmp_path / rec.INSTANCES_DIR / ".a.tmp").write_text("{")
    assert [r.name for r in rec.list_records(state_dir)] == ["a", "b"]
    assert rec.read_record(state_dir, "a") == _record(name="a", exit_code=1, finished_at=3.0)
    rec.remove_record(state_dir, "a")
    assert rec.read_record(state_dir, "a") is None


def test_names_are_file_safe() -> None:
    assert check_name("instance", "qwen-0.5b_1") == "qwen-0.5b_1"
    for bad in ("", "../x", ".hidden", "a b", "x" * 201, None):
        with pytest.raises(ValueError):
            check_name("instance", bad)


def test_read_range_is_inclusive_and_bounded(tmp_path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(bytes(range(30)))
    assert read_range(str(path), 0, 14).data == bytes(range(15))
    assert read_range(str(path), 15, None).data == bytes(range(15, 30))
    past = read_range(str(path), 40, None)
    assert past.data == b"" and past.total == 30
    assert read_range(str(tmp_path / "none"), 0, None).total == 0
    assert read_tail(str(path), 5).encode("latin-1") != b""


def test_socket_path_too_long_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DeployerError, match="shorter run_dir"):
        DaemonHandle(str(tmp_path / ("d" * 120)), python="python3")


def test_missing_python_makes_the_deployer_unavailable(tmp_path) -> None:
    assert "not an executable" in (vllm_missing(str(tmp_path / "nopython")) or "")
    with pytest.raises(DeployerUnavailable, match="needs vLLM"):
        LauncherDeployer(run_dir=str(tmp_path), python=str(tmp_path / "nopython"))


def test_state_file_of_a_gone_daemon_is_reported(tmp_path) -> None:
    deployer = LauncherDeployer(run_dir=str(tmp_path), python=os.path.realpath("/bin/sh"))
    log = tmp_path / "logs" / "a.log"
    log.parent.mkdir()
    log.write_text("fatal: out of memory\n")
    rec.write_record(str(tmp_path), _record(name="a", log=str(log), pid=2**22 + 7))
    status = deployer.get("a")
    assert status.state is WorkloadState.FAILED and "out of memory" in status.reason
    assert deployer.logs("a").data == b"fatal: out of memory\n"
    assert deployer.delete("a").state is WorkloadState.FAILED
    assert deployer.delete("a") is None and not log.exists()
