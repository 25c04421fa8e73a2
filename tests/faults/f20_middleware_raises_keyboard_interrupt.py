# Fault: a middleware that raises KeyboardInterrupt (a BaseException).
# Server: never stops: the call fails INTERNAL, the traceback is logged.
UCS_PLUGIN = "Interrupts"


class Interrupts:
    def __init__(self, ucs):
        ucs.api.addMiddleware("shared.get", self.middleware)

    def middleware(self, handler, caller, identificator):
        if identificator == "f20":
            raise KeyboardInterrupt()
        return handler(caller, identificator)
