# Fault: stop() raises.
# Server: on unload the error is logged and kept in plugins.list, and the
# plugin is unloaded anyway (STOPPED, L2).
UCS_PLUGIN = "RaisesInStop"


class RaisesInStop:
    def __init__(self, ucs):
        self.ucs = ucs

    def stop(self):
        raise OSError("f06 stop refuses to work")
