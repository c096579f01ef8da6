"""A real GPUStack 2.3.0 server for the ``gpustack`` tests: its own PostgreSQL 15 cluster (initdb
as user ``postgres`` when run as root, trust auth, 127.0.0.1, a free port) and ``gpustack start``
from its own virtualenv (``scripts/setup_gpustack.sh`` / ``make gpustack``), both on ports chosen at
run time and stopped by PID at the end. With ``CI=true`` a missing piece fails; elsewhere it skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from berth.testing import free_port
from tests.support.processes import exists
from tests.support.serve_process import stop_group

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REPO = Path(__file__).resolve().parents[2]
REGISTRATION_TOKEN = "berth-e2e-registration-token"
ADMIN_PASSWORD = "Berth-e2e-Admin-1"
START_TIMEOUT = 240.0


def gpustack_bin() -> Path:
    return Path(os.environ.get("BERTH_GPUSTACK_BIN") or REPO / ".venv-gpustack" / "bin" / "gpustack")


def pg_bin() -> Path:
    return Path(os.environ.get("BERTH_PG_BIN") or "/usr/lib/postgresql/15/bin")


def gpustack_missing() -> str | None:
    if not gpustack_bin().exists():
        return f"{gpustack_bin()} is missing (make gpustack, or set BERTH_GPUSTACK_BIN)"
    if not (pg_bin() / "initdb").exists():
        return f"{pg_bin()}/initdb is missing (make gpustack installs postgresql-15, or set BERTH_PG_BIN)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is missing (initdb must run as user postgres when the tests run as root)"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpustack") is None:
        return
    reason = gpustack_missing()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"[gpustack] required in CI but missing: {reason}", pytrace=False)
    pytest.skip(f"[gpustack] {reason}")


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as user postgres."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Postgres:
    data: Path
    port: int
    log: Path

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/gpustack?sslmode=disable"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    reason = gpustack_missing()
    if reason is not None:
        pytest.skip(reason) if not IN_CI else pytest.fail(reason)
    # Not under pytest's base temp: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="berth-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    pg = Postgres(data=root / "data", port=free_port(), log=root / "postgres.log")
    _run(_as_postgres([str(pg_bin() / "initdb"), "-D", str(pg.data), "--auth=trust", "-U", "postgres"]), "initdb")
    options = f"-c listen_addresses=127.0.0.1 -p {pg.port} -k {root}"
    _run(_as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(pg.data), "-l", str(pg.log), "-o", options, "-w",
                       "start"]), "pg_ctl start")
    try:
        _run([str(pg_bin() / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "gpustack"],
             "createdb")
        yield pg
    finally:
        pid = pg.postmaster_pid()
        subprocess.run(_as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(pg.data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=120)
        if pid is not None and exists(pid):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class GPUStackServer:
    url: str
    log: Path
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or start again, on the same ports and database) and wait until ``/readyz`` answers."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        _wait_ready(self)

    def kill(self) -> None:
        """Gone at once, as a crashed server is (its process group, SIGKILL)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout=20)

    def admin(self) -> httpx.Client:
        """A client logged in as the bootstrap admin (session cookie)."""
        client = httpx.Client(base_url=self.url, trust_env=False, timeout=60)
        answer = client.post("/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD})
        assert answer.status_code == 200, answer.text
        return client


@pytest.fixture(scope="session")
def gpustack_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GPUStackServer]:
    root = tmp_path_factory.mktemp("gpustack")
    api, server_port, proxy, metrics = (free_port() for _ in range(4))
    argv = [
        str(gpustack_bin()), "start", "--data-dir", str(root / "data"), "--database-url", postgres.url(),
        "--api-port", str(api), "--port", str(server_port), "--proxy-port", str(proxy),
        "--metrics-port", str(metrics), "--gateway-mode", "disabled", "--disable-update-check",
        "--disable-builtin-observability", "--bootstrap-password", ADMIN_PASSWORD, "--token", REGISTRATION_TOKEN,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "GPUSTACK_"))}
    server = GPUStackServer(url=f"http://127.0.0.1:{api}", log=root / "gpustack.log", argv=argv, env=env)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _wait_ready(server: GPUStackServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(trust_env=False, timeout=5) as http:
        while time.monotonic() < deadline:
            assert server.proc is not None
            if server.proc.poll() is not None:
                raise AssertionError(f"gpustack exited {server.proc.returncode}:\n{server.log.read_text()[-4000:]}")
            try:
                if http.get(f"{server.url}/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
    raise AssertionError(f"gpustack not ready in {START_TIMEOUT:.0f} s:\n{server.log.read_text()[-4000:]}")
