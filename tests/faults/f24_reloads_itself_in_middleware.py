# Fault: a middleware that reloads its own plugin while it runs.
# Server: the reload completes (old version stopped, new version started)
# while the old middleware is still running; its result is the answer and
# the new version's middleware serves the next call.
UCS_PLUGIN = "ReloadsSelf"


class ReloadsSelf:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.api.addMiddleware("shared.get", self.middleware)

    def middleware(self, handler, caller, identificator):
        if identificator == "f24":
            info = self.ucs.api.plugins.load(self.ucs.sid, "f24_reloads_itself_in_middleware")
            return "reloaded:" + info["state"]
        return handler(caller, identificator)
