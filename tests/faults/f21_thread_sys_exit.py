# Fault: a Thread plugin whose run() calls sys.exit().
# Server: SystemExit ends only that thread (Python's threading swallows it);
# the process keeps serving and the plugin stays RUNNING until unloaded.
import sys
import threading

UCS_PLUGIN = "ExitingThread"


class ExitingThread(threading.Thread):
    def __init__(self, ucs):
        super().__init__(daemon=True)
        self.ucs = ucs

    def run(self):
        self.ucs.log.warn("f21 thread calls sys.exit()")
        sys.exit(1)

    def stop(self):
        pass
