# Fault: an event callback that raises.
# Server: D5: the traceback is logged naming the plugin and the change stands.
from events import EVENT_SHARED_DATA

UCS_PLUGIN = "CallbackRaises"


class CallbackRaises:
    def __init__(self, ucs):
        ucs.addCallback(EVENT_SHARED_DATA, self.on_shared)

    def on_shared(self, identificator, data):
        if identificator == "f30":
            return 1 / 0
