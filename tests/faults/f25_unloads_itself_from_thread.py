# Fault: a Thread plugin whose own thread unloads the plugin.
# Server: the unload calls stop() and must not wait for the very thread that
# asked (it would wait for itself); the plugin ends STOPPED, not stuck.
import threading

UCS_PLUGIN = "ThreadUnloadsSelf"


class ThreadUnloadsSelf(threading.Thread):
    def __init__(self, ucs):
        super().__init__(daemon=True)
        self.ucs = ucs
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(0.05):
            if self.ucs.shared.get("f25") == "go":
                self.ucs.api.plugins.unload(self.ucs.sid, "f25_unloads_itself_from_thread")
                break

    def stop(self):
        self.stopping.set()
