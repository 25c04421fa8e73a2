# Fault: the same callback registered twice.
# Server: registrations are a list, as in the original: it is called twice
# per event; one removeCallback removes one registration; unload removes the
# rest with a warning each (L4).
from events import EVENT_SHARED_DATA

UCS_PLUGIN = "Twice"


class Twice:
    def __init__(self, ucs):
        self.ucs = ucs
        self.calls = 0
        ucs.addCallback(EVENT_SHARED_DATA, self.on_shared)
        ucs.addCallback(EVENT_SHARED_DATA, self.on_shared)
        ucs.api.addMiddleware("shared.get", self.middleware)

    def on_shared(self, identificator, data):
        if identificator == "f27":
            self.calls += 1

    def middleware(self, handler, caller, identificator):
        if identificator == "f27_calls":
            return self.calls
        return handler(caller, identificator)
