# Fault: start() raises after registering a middleware.
# Server: FAILED with the RuntimeError traceback (L1); the middleware is
# removed, so shared.get is not broken by it.
UCS_PLUGIN = "RaisesInStart"


class RaisesInStart:
    def __init__(self, ucs):
        self.ucs = ucs

    def start(self):
        self.ucs.api.addMiddleware("shared.get", self.middleware)
        raise RuntimeError("f05 start refuses to work")

    def middleware(self, handler, caller, identificator):
        raise AssertionError("f05 middleware must have been removed")
