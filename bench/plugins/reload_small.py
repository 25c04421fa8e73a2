"""A small plugin for the reload-latency benchmark: what a typical plugin
does at load (imports, a class, one registration) and nothing slow."""

from events import EVENT_AGENT_STATUS

UCS_PLUGIN = 'ReloadSmall'


class ReloadSmall:
    """Registers one callback and removes it on stop."""

    def __init__(self, ucs):
        self.ucs = ucs
        self.seen = 0
        ucs.addCallback(EVENT_AGENT_STATUS, self.on_status)

    def on_status(self, agent, args):
        """Counts status changes."""
        self.seen += 1

    def stop(self):
        """Unregisters the callback."""
        self.ucs.removeCallback(EVENT_AGENT_STATUS, self.on_status)
