"""A trivial agent status hook: lets every change through (H3). The
benchmarks compare a status change through it with its floor: the same
function called straight from Rust with the same agents.Agent and
arguments."""

UCS_PLUGIN = 'TrivialStatusHook'


class TrivialStatusHook:
    """Registers the hook and nothing else."""

    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        """Lets the change through unchanged."""
        return status, reason

    def stop(self):
        """Removes the hook."""
        self.ucs.agents.removeChangeStatusHook()
