"""A status hook: lets through, rewrites or blocks status changes (SPEC H1-H6)."""

from typing import TYPE_CHECKING, Optional, Tuple

from agents import Agent
from constants import AGENT_AUX, AGENT_OFFLINE, AGENT_READY
from error import ProcessingError

if TYPE_CHECKING:
    from ucs import Ucs

UCS_PLUGIN = 'BreakPolicy'

ALLOWED_REASONS = {'Lunch', 'Training', 'Meeting'}


class BreakPolicy:
    """Only one status hook exists in the whole server."""

    def __init__(self, ucs: "Ucs") -> None:
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def stop(self) -> None:
        self.ucs.agents.removeChangeStatusHook()

    def hook(self, agent: Agent, status: int, reason: str) -> Tuple[Optional[int], str]:
        if status == AGENT_AUX and reason not in ALLOWED_REASONS:
            # Block: the caller gets ProcessingError with this message.
            return None, f'unknown break reason {reason!r}'
        if status == AGENT_AUX and reason == 'Meeting' and agent.status == AGENT_OFFLINE:
            raise ProcessingError('log in before going to a meeting')
        if agent.status == AGENT_OFFLINE and status == AGENT_READY:
            # Rewrite: new logins start with a short briefing.
            return AGENT_AUX, 'Training'
        # Let through unchanged.
        return status, reason
