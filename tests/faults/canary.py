# The healthy canary, not a fault: it owns one of each kind of registration
# (a shared-data hook, an event callback, a middleware), so after every fault
# the suite can check that the other plugins still work.
from events import EVENT_SHARED_DATA

UCS_PLUGIN = "Canary"


class Canary:
    def __init__(self, ucs):
        self.ucs = ucs
        self.events = 0

    def start(self):
        self.ucs.addCallback(EVENT_SHARED_DATA, self.on_shared)
        self.ucs.shared.addChangeHook("canary", self.hook)
        self.ucs.api.addMiddleware("shared.get", self.middleware)

    def stop(self):
        self.ucs.removeCallback(EVENT_SHARED_DATA, self.on_shared)
        self.ucs.shared.removeChangeHook("canary")
        self.ucs.api.removeMiddleware("shared.get", self.middleware)

    def on_shared(self, identificator, data):
        if identificator == "canary":
            self.events += 1

    def hook(self, identificator, old_data, new_data):
        return {"value": new_data, "hooked": True}

    def middleware(self, handler, caller, identificator):
        if identificator == "canary_events":
            return self.events
        return handler(caller, identificator)
