# Fault: a middleware that calls its handler twice.
# Server: both calls run (the method is applied twice; hooks and callbacks
# see two changes) and the second result is the answer. Allowed: each call is
# a complete API call.
UCS_PLUGIN = "Twice"


class Twice:
    def __init__(self, ucs):
        ucs.api.addMiddleware("shared.set", self.middleware)

    def middleware(self, handler, caller, identificator, data):
        if identificator == "f18":
            handler(caller, identificator, data + 1)
        return handler(caller, identificator, data)
