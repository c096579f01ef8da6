"""A launcher daemon that does not answer is still stopped by shutdown()."""

import subprocess
import sys
import time

from berth.deployers.launcher._spawn import DAEMON_MODULE, DaemonHandle


def test_unanswering_daemon_is_killed_by_its_group(tmp_path):
    state_dir = str(tmp_path)
    # a stand-in "daemon": right command line, no socket, ignores SIGTERM
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, DAEMON_MODULE, state_dir], start_new_session=True)
    time.sleep(0.3)
    handle = DaemonHandle(state_dir, python=sys.executable)
    assert handle.shutdown(timeout=1.0) is True
    assert proc.wait(timeout=10) == -9


def test_no_daemon_means_nothing_to_stop(tmp_path):
    assert DaemonHandle(str(tmp_path), python=sys.executable).shutdown(timeout=1.0) is False
