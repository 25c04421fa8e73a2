# Fault: a status hook that raises KeyError, not ProcessingError.
# Server: H6: the traceback or the bad value is logged naming the plugin, and
# the agent is switched to the state originally requested.
UCS_PLUGIN = "Hook"


class Hook:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def stop(self):
        self.ucs.agents.removeChangeStatusHook()

    def hook(self, agent, status, reason):
        raise KeyError("f08 hook has a bug")
