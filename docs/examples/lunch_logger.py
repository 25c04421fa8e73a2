"""Logs when an agent goes to lunch: an event callback (SPEC E1, E2)."""

from typing import TYPE_CHECKING, Any, Dict

from constants import AGENT_AUX
from events import EVENT_AGENT_STATUS

if TYPE_CHECKING:
    from ucs import Ucs

UCS_PLUGIN = 'LunchLogger'


class LunchLogger:
    """Callbacks run after the change is committed, before the API call returns."""

    def __init__(self, ucs: "Ucs") -> None:
        self.ucs = ucs
        ucs.addCallback(EVENT_AGENT_STATUS, self.on_status)

    def stop(self) -> None:
        # A new bound method compares equal (==) to the registered one.
        self.ucs.removeCallback(EVENT_AGENT_STATUS, self.on_status)

    def on_status(self, agent: Any, args: Dict[str, Any]) -> None:
        if agent['status'] == AGENT_AUX and args['previous_status'] != AGENT_AUX:
            self.ucs.log.info('%s went on a break: %s', agent['displayname'], agent['reason'])
