"""A shared-data hook that kills its own process with SIGSEGV when
'bench.crash' is set: the isolation benchmark measures how long the server
takes from that crash to the restarted plugin serving again."""

import ctypes

UCS_PLUGIN = 'Crasher'


class Crasher:
    """Registers the crashing hook and nothing else."""

    def __init__(self, ucs):
        self.ucs = ucs
        ucs.shared.addChangeHook('bench.crash', self.crash)

    def crash(self, identificator, old_data, new_data):
        """Dereferences a null pointer."""
        ctypes.string_at(0)

    def stop(self):
        """Removes the hook."""
        self.ucs.shared.removeChangeHook('bench.crash')
