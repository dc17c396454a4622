"""RunLock: one process per run folder, and a killed holder never leaves the folder stuck."""
import os
import signal
import subprocess
import sys
import time

import pytest

from s4vision.engine.runlock import LOCK_NAME, RunFolderLockedError, RunLock
from s4vision.errors import S4VisionError


def test_a_second_holder_is_refused_with_the_folder_and_pid(tmp_path):
    folder = tmp_path / "run"
    with RunLock(folder) as lock:
        assert lock.held and (folder / LOCK_NAME).is_file()
        with pytest.raises(RunFolderLockedError, match=f"{folder} is in use by another s4vision run "
                                                       f"\\(PID {os.getpid()}\\)") as info:
            RunLock(folder).acquire()
        assert isinstance(info.value, S4VisionError)
    assert not lock.held
    RunLock(folder).acquire().release()  # free again


def test_a_killed_holder_releases_the_lock(tmp_path):
    folder = tmp_path / "run"
    code = ("import sys, time; from s4vision.engine.runlock import RunLock\n"
            f"lock = RunLock({str(folder)!r}).acquire(); print('held', flush=True); time.sleep(300)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderLockedError, match=f"PID {holder.pid}"):
            RunLock(folder).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 30
    while True:  # the kernel drops the lock as the process dies
        try:
            RunLock(folder).acquire().release()
            break
        except RunFolderLockedError:
            assert time.monotonic() < deadline, "the lock outlived its killed holder"
            time.sleep(0.05)
