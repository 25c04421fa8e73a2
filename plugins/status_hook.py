"""Agent status change hook example"""

import time

from constants import AGENT_OFFLINE, AGENT_READY, AGENT_AUX
from error import ProcessingError

UCS_PLUGIN = 'StatusHook'


class StatusHook:
    """Agent status change hook example"""

    def __init__(self, ucs):
        self.ucs = ucs
        self.ucs.agents.addChangeStatusHook(self.hook)

    def stop(self):
        """Called on plugin reload or UCS stop"""
        self.ucs.agents.removeChangeStatusHook()

    def hook(self, agent, new_status, new_reason):
        """Called when agent status is about to change"""

        hour = time.localtime().tm_hour

        if new_status == AGENT_AUX and new_reason == 'Oběd':
            if hour < 11:
                return None, 'Na oběd je příliš brzy'

            if hour > 17:
                raise ProcessingError('Už je čas na večeři')

        if agent.status == AGENT_OFFLINE and new_status == AGENT_READY:
            return AGENT_AUX, 'Seznámení se z provozními pokyny'

        return new_status, new_reason
