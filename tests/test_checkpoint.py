"""The window in which a preemption signal may not act: one optimizer update."""

import os
import signal
import threading
import time

from seedgrid.checkpoint import signals_held


def test_a_signal_sent_from_another_thread_waits_for_the_end_of_the_update():
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: seen.append(time.monotonic()))
    try:
        with signals_held():
            # scancel signals the process: any thread may receive it, not only the main one
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGUSR2))
            sender.start()
            sender.join()
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:  # bytecodes run: a handler could act here
                pass
            assert seen == []
            ended = time.monotonic()
        assert len(seen) == 1 and seen[0] >= ended  # delivered once, right after the block
        assert signal.getsignal(signal.SIGUSR2) is not None
        os.kill(os.getpid(), signal.SIGUSR2)  # and the real handler is back in place
        time.sleep(0.05)
        assert len(seen) == 2
    finally:
        signal.signal(signal.SIGUSR2, previous)
