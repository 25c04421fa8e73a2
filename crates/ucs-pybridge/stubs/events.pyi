"""Event names for `ucs.addCallback` (SPEC E1, E2)."""

from typing import Final

EVENT_AGENT_STATUS: Final[str]
"""After an agent's status changed: `callback(agent, args)`; `agent['status']`,
`agent['reason']`, `agent['displayname']` are the state after the change, and
`args` holds `previous_status` and `previous_reason`."""
EVENT_SHARED_DATA: Final[str]
"""After shared data changed: `callback(identificator, data)` with the data stored."""
