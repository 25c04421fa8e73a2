#!/usr/bin/python3

"""Example plugin"""

import threading

from constants import AGENT_AUX
from events import EVENT_AGENT_STATUS

UCS_PLUGIN = 'Example'


class Example(threading.Thread):
    """Example plugin"""

    def __init__(self, ucs):
        super().__init__()
        self.name = 'ExamplePluginThread'
        self.ucs = ucs
        self.ucs.addCallback(EVENT_AGENT_STATUS, self.agent_status_changed)

        self.terminate = False
        self.work = threading.Event()

    def agent_status_changed(self, agent, args):
        """Called when agent change status"""
        if agent['status'] == AGENT_AUX and agent['reason'] == 'Oběd':
            self.ucs.log.info(f'Agent {agent["displayname"]} odešel na oběd')

    def run(self):
        """Thread main loop"""
        while True:
            self.work.wait(60)
            self.work.clear()
            if self.terminate:
                return

            agents = self.ucs.agents.getAgents()
            for agent in agents:
                if agent['status'] == AGENT_AUX and agent['reason'] == 'Oběd':
                    self.ucs.log.info(f'Agent {agent["displayname"]} je na obědě')

    def stop(self):
        """Called on plugin reload or UCS stop"""
        self.ucs.removeCallback(EVENT_AGENT_STATUS, self.agent_status_changed)
        self.terminate = True
        self.work.set()
