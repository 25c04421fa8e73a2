"""The pure-Python twin of a status change through a trivial hook, run in the
server's own interpreter: a loop that calls the same hook function and
updates the agent's dict. The micro-benchmark drives it through a middleware
on shared.get (identificator 'bench.pure_python_loop:N' for N iterations; the
API checks the parameter count before the chain, so N cannot be a second
parameter) and uses the nanoseconds the loop itself took, so the call into
the plugin is not counted."""

import time

from constants import AGENT_AUX, AGENT_READY

UCS_PLUGIN = 'PurePythonLoop'

LOOP_IDENTIFICATOR = 'bench.pure_python_loop'


class PurePythonLoop:
    """Runs the loop on request."""

    def __init__(self, ucs):
        self.ucs = ucs
        ucs.api.addMiddleware('shared.get', self.run_loop)

    def hook(self, agent, status, reason):
        """The same body as trivial_status_hook.py."""
        return status, reason

    def run_loop(self, handler, caller, identificator, *rest):
        """Runs N status changes in pure Python; returns the ns taken."""
        name, _, count = str(identificator).partition(':')
        if name != LOOP_IDENTIFICATOR or not count.isdigit():
            return handler(caller, identificator, *rest)
        iterations = int(count)
        hook = self.hook
        agent = {'id': 2, 'username': 'alice', 'displayname': 'Alice Smith',
                 'status': AGENT_READY, 'reason': ''}
        ready = (AGENT_READY, '')
        aux = (AGENT_AUX, 'Lunch')
        started = time.perf_counter_ns()
        for i in range(iterations):
            status, reason = aux if i & 1 else ready
            status, reason = hook(agent, status, reason)
            agent['status'] = status
            agent['reason'] = reason
        return time.perf_counter_ns() - started

    def stop(self):
        """Unwraps shared.get."""
        self.ucs.api.removeMiddleware('shared.get', self.run_loop)
