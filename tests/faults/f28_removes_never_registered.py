# Fault: removing a callback, a middleware and hooks never registered.
# Server: each removal is a warning naming the plugin, not an error; the
# plugin loads and runs.
from events import EVENT_AGENT_STATUS

UCS_PLUGIN = "RemovesNothing"


class RemovesNothing:
    def __init__(self, ucs):
        ucs.removeCallback(EVENT_AGENT_STATUS, self.never)
        ucs.api.removeMiddleware("agents.list", self.never)
        ucs.shared.removeChangeHook("f28")

    def never(self, *args):
        pass
