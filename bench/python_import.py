"""The baseline of the reload benchmark: a plain import of a plugin file into
a fresh module each time, with importlib, as the server does. Prints the
median in ns.

usage: python_import.py PLUGIN_FILE ITERATIONS

The server provides the modules plugins import (constants, events, ...); here
stand-ins with the same names are put in sys.modules first, so only the
import of the file itself is timed.
"""

import importlib.util
import statistics
import sys
import time
import types


def main():
    path, iterations = sys.argv[1], int(sys.argv[2])
    events = types.ModuleType('events')
    events.EVENT_AGENT_STATUS = 'agent.status'
    events.EVENT_SHARED_DATA = 'shared.data'
    sys.modules['events'] = events
    timings = []
    for index in range(iterations + 20):
        started = time.perf_counter_ns()
        spec = importlib.util.spec_from_file_location('reload_small', path)
        module = importlib.util.module_from_spec(spec)
        sys.modules['reload_small'] = module
        spec.loader.exec_module(module)
        took = time.perf_counter_ns() - started
        del sys.modules['reload_small']
        if index >= 20:
            timings.append(took)
    print(statistics.median(timings))


if __name__ == '__main__':
    main()
