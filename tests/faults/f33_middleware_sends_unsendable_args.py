# Fault: a middleware that calls its handler with an argument that is no API
# value.
# Server: the handler raises InvalidDataInput, which the middleware lets
# through: the caller gets INVALID_ARGUMENT naming "args".
UCS_PLUGIN = "BadArgs"


class BadArgs:
    def __init__(self, ucs):
        ucs.api.addMiddleware("shared.get", self.middleware)

    def middleware(self, handler, caller, identificator):
        if identificator == "f33":
            return handler(caller, {1, 2})
        return handler(caller, identificator)
