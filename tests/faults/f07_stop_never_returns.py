# Fault: stop() never returns.
# Server: unload waits at most the stop timeout plus the join timeout, then
# reports the plugin stuck (error "stuck: ...") and unloads it anyway (L3).
import time

UCS_PLUGIN = "NeverStops"


class NeverStops:
    def __init__(self, ucs):
        self.ucs = ucs

    def stop(self):
        while True:
            time.sleep(0.05)
