"""A launcher daemon that does not answer is still stopped by shutdown()."""

import os
import signal
import subprocess
import sys

import pytest

from berth.deployers.launcher._spawn import DAEMON_MODULE, DaemonHandle


@pytest.mark.subprocess
def test_unanswering_daemon_is_killed_by_its_group(tmp_path):
    state_dir = str(tmp_path)
    # a stand-in "daemon": right command line, no socket, ignores SIGTERM (and says so once it does:
    # on a busy machine its start can take seconds, and a SIGTERM before that would end it)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, DAEMON_MODULE, state_dir], start_new_session=True,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        handle = DaemonHandle(state_dir, python=sys.executable)
        assert handle.shutdown(timeout=1.0) is True
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_no_daemon_means_nothing_to_stop(tmp_path):
    assert DaemonHandle(str(tmp_path), python=sys.executable).shutdown(timeout=1.0) is False
