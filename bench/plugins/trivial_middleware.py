"""A trivial middleware on agents.list: calls the handler and returns its
result unchanged. The benchmarks load it to measure what one Python
middleware costs; bench/python_peer.py runs the very same function."""

UCS_PLUGIN = 'TrivialMiddleware'


class TrivialMiddleware:
    """Wraps agents.list and does nothing else."""

    def __init__(self, ucs):
        self.ucs = ucs
        ucs.api.addMiddleware('agents.list', self.middleware)

    def middleware(self, handler, *args):
        """Passes the call through."""
        return handler(*args)

    def stop(self):
        """Unwraps agents.list."""
        self.ucs.api.removeMiddleware('agents.list', self.middleware)
