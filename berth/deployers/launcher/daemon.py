"""The launcher daemon: imports vLLM once, then forks one vLLM server per instance on request.

Run by :class:`berth.deployers.launcher.LauncherDeployer` as ``python -u -s -P _stdlib/run.py
berth.deployers.launcher.daemon STATE_DIR [--preload MODULE ...]`` (by path, so neither berth's
upper layers nor gpustack-runtime are imported into the processes it forks: see
:mod:`berth.deployers._stdlib`), in a session of its own, so it and its instances outlive the
berth process that started it. It:

* takes ``STATE_DIR/daemon.lock`` for its lifetime (one daemon per state directory);
* becomes a child subreaper, so processes orphaned inside an instance are re-parented to it;
* imports vLLM and what an instance loads, builds vLLM's ``serve`` parser, then runs
  ``gc.collect(); gc.freeze()`` so forked children share those pages;
* answers requests on ``STATE_DIR/launcher.sock`` (see :mod:`._protocol`) in one
  thread, with no event loop and no torch operation; ``create`` parses the options with vLLM's
  parser before forking, so a bad option is refused at once with vLLM's message;
* reaps its children, records exit codes and signals (in memory and in a state file per
  instance), and kills what is left of an instance's process group once its server exited;
* on SIGTERM or a ``shutdown`` request stops every instance (SIGTERM, SIGKILL after the
  timeout) and exits.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import gc
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from typing import Any

from berth.deployers._stdlib import proc
from berth.deployers._stdlib.files import unlink
from berth.deployers._stdlib.names import check_name
from berth.deployers.launcher import _child as child
from berth.deployers.launcher import _protocol as proto
from berth.deployers.launcher import _records as rec
from berth.deployers.launcher import _vllm as engine

LOCK_NAME = "daemon.lock"
LOGS_DIR = "logs"
_TICK = 0.05
_DEFAULT_STOP_TIMEOUT = 10.0


class Daemon:
    """The request loop and the instances it forked."""

    def __init__(self, state_dir: str, parser: argparse.ArgumentParser, lock: Any) -> None:
        self.state_dir = state_dir
        self.parser = parser
        self.lock = lock
        self.instances: dict[str, rec.InstanceRecord] = {}
        self.kill_at: dict[str, float] = {}
        self.shutdown_at: float | None = None
        self.signalled = False
        self.selector = selectors.DefaultSelector()
        self.listener = _listen(os.path.join(state_dir, proto.SOCKET_NAME))
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.ops = {
            "ping": self.op_ping,
            "create": self.op_create,
            "status": self.op_status,
            "list": self.op_list,
            "stop": self.op_stop,
            "remove": self.op_remove,
            "shutdown": self.op_shutdown,
        }

    # -- loop ----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        while not (self.shutdown_at is not None and not self._alive() and not self._draining()):
            for _key, _events in self.selector.select(timeout=_TICK):
                self._accept()
            if self.signalled and self.shutdown_at is None:
                _say("signalled: stopping every instance")
                self.begin_shutdown(_DEFAULT_STOP_TIMEOUT)
            self._reap()
            self._drain()
            self._enforce_deadlines()
        self.close()

    def close(self) -> None:
        self.selector.close()
        self.listener.close()
        unlink(os.path.join(self.state_dir, proto.SOCKET_NAME))

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            conn.setblocking(True)
            conn.settimeout(5.0)
            try:
                reply = self.handle(proto.decode(proto.read_line(conn)), conn)
                conn.sendall(proto.encode(reply))
            except (OSError, ValueError) as exc:
                _say(f"dropped a request: {type(exc).__name__}: {exc}")

    def handle(self, request: dict[str, Any], conn: socket.socket | None = None) -> dict[str, Any]:
        op = self.ops.get(str(request.get("op")))
        if op is None:
            return proto.error("invalid", f"unknown op {request.get('op')!r}; one of {sorted(self.ops)}")
        try:
            return proto.ok(op(request, conn))
        except _Refused as exc:
            return proto.error(exc.kind, str(exc))
        except ValueError as exc:
            return proto.error("invalid", str(exc))
        except KeyError as exc:
            return proto.error("not_found", str(exc.args[0]) if exc.args else "not found")
        except Exception as exc:  # noqa: BLE001 - a bad request must not take the daemon down
            traceback.print_exc()
            return proto.error("internal", f"{type(exc).__name__}: {exc}")

    # -- ops -----------------------------------------------------------------------------

    def op_ping(self, request: dict[str, Any], conn: Any) -> dict[str, Any]:
        return {"pid": os.getpid(), "instances": len(self.instances)}

    def op_create(self, request: dict[str, Any], conn: Any) -> dict[str, Any]:
        self._check_create(request)
        name, args = request["name"], [str(a) for a in request.get("args") or []]
        try:
            namespace = engine.parse_serve_args(self.parser, args)
        except engine.ServeArgsError as exc:
            raise _Refused("invalid", f"vLLM refused the options of {name!r}: {exc}") from None
        record = self._fork(request, namespace, args, conn)
        self.instances[name] = record
        rec.write_record(self.state_dir, record)
        _say(f"started {name!r} as pid {record.pid}")
        return record.to_dict()

    def _check_create(self, request: dict[str, Any]) -> None:
        name = check_name("instance", request.get("name"))
        if self.shutdown_at is not None:
            raise _Refused("unsupported", "the launcher daemon is shutting down")
        if name in self.instances:
            raise _Refused("exists", f"instance {name!r} already exists in the launcher")
        if not isinstance(request.get("log"), str):
            raise _Refused("invalid", "create needs 'log', the path of the instance's log file")

    def _fork(
        self, request: dict[str, Any], namespace: argparse.Namespace, args: list[str], conn: Any
    ) -> rec.InstanceRecord:
        log = request["log"]
        os.makedirs(os.path.dirname(log), mode=0o700, exist_ok=True)
        os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        env = {str(k): str(v) for k, v in (request.get("env") or {}).items()}
        daemon_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            child.become_instance(
                log_path=log,
                env=env,
                cwd=request.get("cwd"),
                closeables=[conn, self.listener, self.selector, self.lock],
                daemon_pid=daemon_pid,
                run=lambda: engine.serve(namespace, args),
            )
        return rec.InstanceRecord(
            name=request["name"],
            pid=pid,
            log=log,
            created_at=time.time(),
            labels={str(k): str(v) for k, v in (request.get("labels") or {}).items()},
        )

    def op_status(self, request: dict[str, Any], conn: Any) -> dict[str, Any]:
        return self._get(request).to_dict()

    def op_list(self, request: dict[str, Any], conn: Any) -> dict[str, Any]:
        return {"instances": [r.to_dict() for r in self.instances.values()]}

    def op_stop(self, request: dict[str, Any], conn: Any) -> dict[str, Any]:
        record = self._get(request)
        self._stop(record, float(request.get("timeout", _DEFAULT_STOP_TIMEOUT)))
        return record.to_dict()

    def op_remove(self, request: dict[str, Any], conn: Any) -> dict[str, Any]:
        record = self._get(request)
        if record.alive or not record.drained:
            raise _Refused("invalid", f"instance {record.name!r} is still running; stop it first")
        del self.instances[record.name]
        rec.remove_record(self.state_dir, record.name)
        unlink(record.log)
        return record.to_dict()

    def op_shutdown(self, request: dict[str, Any], conn: Any) -> dict[str, Any]:
        timeout = float(request.get("timeout", _DEFAULT_STOP_TIMEOUT))
        return {"stopping": self.begin_shutdown(timeout)}

    def begin_shutdown(self, timeout: float) -> int:
        alive = [r for r in self.instances.values() if r.alive]
        for record in alive:
            self._stop(record, timeout)
        self.shutdown_at = time.monotonic()
        return len(alive)

    # -- helpers -------------------------------------------------------------------------

    def _get(self, request: dict[str, Any]) -> rec.InstanceRecord:
        name = str(request.get("name"))
        try:
            return self.instances[name]
        except KeyError:
            raise KeyError(f"no instance named {name!r} in the launcher") from None

    def _stop(self, record: rec.InstanceRecord, timeout: float) -> None:
        if not record.alive:
            return
        record.stop_requested = True
        proc.send_group(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, timeout)
        self.kill_at[record.name] = min(deadline, self.kill_at.get(record.name, deadline))
        rec.write_record(self.state_dir, record)

    def _alive(self) -> bool:
        return any(r.alive for r in self.instances.values())

    def _draining(self) -> list[rec.InstanceRecord]:
        return [r for r in self.instances.values() if not r.alive and not r.drained]

    def _drain(self) -> None:
        """Kill and (as subreaper) reap what is left of ended instances' process groups."""
        for record in self._draining():
            if not proc.send_group(record.pid, signal.SIGKILL):
                record.drained = True
                rec.write_record(self.state_dir, record)

    def _reap(self) -> None:
        by_pid = {r.pid: r for r in self.instances.values() if r.alive}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            record = by_pid.get(pid)
            if record is not None:
                self._ended(record, status)

    def _ended(self, record: rec.InstanceRecord, status: int) -> None:
        record.ended(status, time.time())
        proc.send_group(record.pid, signal.SIGKILL)  # engine core and workers left behind, if any
        self.kill_at.pop(record.name, None)
        rec.write_record(self.state_dir, record)
        _say(f"{record.name!r} (pid {record.pid}) ended: exit {record.exit_code}, signal {record.signal}")

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for name, deadline in list(self.kill_at.items()):
            if now >= deadline:
                proc.send_group(self.instances[name].pid, signal.SIGKILL)
                del self.kill_at[name]


class _Refused(Exception):
    """A request the daemon turns down; becomes an error reply of ``kind``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _listen(path: str) -> socket.socket:
    unlink(path)  # the lock is ours, so a socket file left here is stale
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _say(message: str) -> None:
    print(f"[berth-launcher {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _lock(state_dir: str) -> Any:
    """Hold ``daemon.lock`` for the daemon's life; exit 3 if another daemon holds it."""
    handle = open(os.path.join(state_dir, LOCK_NAME), "a+")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            _say(f"another launcher daemon already serves {state_dir}")
            sys.exit(3)
        raise
    return handle


def _settle_orphans(state_dir: str) -> None:
    """Records an earlier daemon left without an exit: kill what remains, mark them ended."""
    for record in rec.list_records(state_dir):
        if record.alive:
            proc.send_group(record.pid, signal.SIGKILL)
            record.finished_at = time.time()
            record.drained = True  # killed; not ours to reap any more
            rec.write_record(state_dir, record)


def _install_signal_handlers(daemon: Daemon) -> None:
    def on_signal(signum: int, _frame: Any) -> None:
        daemon.signalled = True  # acted on by the loop, never inside a request

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="berth-launcher-daemon")
    cli.add_argument("state_dir")
    cli.add_argument("--preload", action="append", default=[], help="extra module to import")
    options = cli.parse_args(argv)
    state_dir = os.path.abspath(options.state_dir)
    os.makedirs(os.path.join(state_dir, LOGS_DIR), mode=0o700, exist_ok=True)
    lock = _lock(state_dir)
    proc.become_subreaper()
    started = time.monotonic()
    failed, parser = engine.preload(tuple(options.preload))
    for line in failed:
        _say(f"preload skipped {line}")
    gc.collect()
    gc.freeze()
    _settle_orphans(state_dir)
    daemon = Daemon(state_dir, parser, lock)
    _install_signal_handlers(daemon)
    _say(f"pid {os.getpid()} ready in {time.monotonic() - started:.1f} s on {daemon.listener.getsockname()}")
    daemon.serve_forever()
    _say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
