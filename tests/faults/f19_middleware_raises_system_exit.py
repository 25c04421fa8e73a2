# Fault: a middleware that raises SystemExit (a BaseException).
# Server: never exits: the call fails INTERNAL and the traceback is logged
# naming the plugin.
import sys

UCS_PLUGIN = "Exits"


class Exits:
    def __init__(self, ucs):
        ucs.api.addMiddleware("shared.get", self.middleware)

    def middleware(self, handler, caller, identificator):
        if identificator == "f19":
            sys.exit(3)
        return handler(caller, identificator)
