# Fault (allowed by M2): a middleware that never calls its handler.
# Server: what it returns is the result; the built-in method never runs.
UCS_PLUGIN = "ShortCircuit"


class ShortCircuit:
    def __init__(self, ucs):
        ucs.api.addMiddleware("shared.get", self.middleware)

    def middleware(self, handler, caller, identificator):
        if identificator == "f16":
            return "short-circuit"
        return handler(caller, identificator)
