"""A plugin thread that spins in pure Python, holding the GIL, while shared
data 'bench.spin' is true, and sleeps otherwise. The GIL-independence
benchmark toggles it and compares agents.list latency, and that of a status
change through this plugin's own hook, which needs the GIL the spinner
holds."""

import threading

from events import EVENT_SHARED_DATA

UCS_PLUGIN = 'GilSpinner'

SPIN_IDENTIFICATOR = 'bench.spin'


class GilSpinner(threading.Thread):
    """Spins on request; stops on stop()."""

    def __init__(self, ucs):
        super().__init__(daemon=True, name='GilSpinner')
        self.ucs = ucs
        self.spinning = threading.Event()
        self.stopping = threading.Event()
        self.spins = 0
        ucs.addCallback(EVENT_SHARED_DATA, self.on_shared)
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, new_status, new_reason):
        """Lets every change through."""
        return new_status, new_reason

    def on_shared(self, identificator, data):
        """Turns spinning on or off."""
        if identificator == SPIN_IDENTIFICATOR:
            if data:
                self.spinning.set()
            else:
                self.spinning.clear()

    def run(self):
        """Pure Python work with no call into the server while spinning."""
        while not self.stopping.is_set():
            if not self.spinning.is_set():
                self.spinning.wait(0.05)
                continue
            total = 0
            for i in range(100_000):
                total += i * i
            self.spins += 1

    def stop(self):
        """Ends the thread."""
        self.ucs.removeCallback(EVENT_SHARED_DATA, self.on_shared)
        self.ucs.agents.removeChangeStatusHook()
        self.stopping.set()
        self.spinning.set()
