# Fault: a middleware that never calls its handler and returns an object
# that is no API value.
# Server: the call fails INTERNAL; the log names the plugin and the reason.
UCS_PLUGIN = "Unsendable"


class Unsendable:
    def __init__(self, ucs):
        ucs.api.addMiddleware("shared.get", self.middleware)

    def middleware(self, handler, caller, identificator):
        if identificator == "f17":
            return object()
        return handler(caller, identificator)
