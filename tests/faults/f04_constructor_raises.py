# Fault: the constructor registers a callback, then raises.
# Server: FAILED with the ValueError traceback; the callback registered before
# the failure is removed (L1), so it is never called.
from events import EVENT_SHARED_DATA

UCS_PLUGIN = "RaisesInInit"


class RaisesInInit:
    def __init__(self, ucs):
        ucs.addCallback(EVENT_SHARED_DATA, self.on_shared)
        raise ValueError("f04 constructor refuses to work")

    def on_shared(self, identificator, data):
        raise AssertionError("f04 callback must have been removed")
