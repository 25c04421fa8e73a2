"""A trivial agent status hook: lets every change through (H3). The
benchmarks compare a status change through it with pure_python_loop.py,
which calls the same function from a Python loop."""

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
