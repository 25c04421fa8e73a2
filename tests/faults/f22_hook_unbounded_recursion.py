# Fault: a shared-data hook that recurses without bound.
# Server: RecursionError is an ordinary exception: S4, logged naming the
# plugin, the requested data is stored; the thread's stack survives.
UCS_PLUGIN = "Recurses"


class Recurses:
    def __init__(self, ucs):
        ucs.shared.addChangeHook("f22", self.hook)

    def hook(self, identificator, old_data, new_data):
        return self.hook(identificator, old_data, new_data)
