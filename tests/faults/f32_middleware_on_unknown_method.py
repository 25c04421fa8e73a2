# Fault: a middleware on a method that does not exist (a typo).
# Server: addMiddleware raises ProcessingError (M1); uncaught in start(), so
# the plugin ends FAILED with that message (L1).
UCS_PLUGIN = "Typo"


class Typo:
    def __init__(self, ucs):
        self.ucs = ucs

    def start(self):
        self.ucs.api.addMiddleware("shared.gett", lambda handler, *args: handler(*args))
