# Fault: a shared-data hook that unloads its own plugin.
# Server: the unload completes (stop runs, registrations go) while the hook
# is still running; the hook's return value is stored; the plugin ends
# STOPPED; nothing deadlocks.
UCS_PLUGIN = "UnloadsSelf"


class UnloadsSelf:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.shared.addChangeHook("f23", self.hook)

    def stop(self):
        self.ucs.shared.removeChangeHook("f23")

    def hook(self, identificator, old_data, new_data):
        self.ucs.api.plugins.unload(self.ucs.sid, "f23_unloads_itself_in_hook")
        return {"unloaded_self": True}
