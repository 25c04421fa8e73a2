"""Agent status codes (SPEC section 6)."""

from typing import Final, Tuple

AGENT_OFFLINE: Final[int]
"""0: logged out; every agent starts here after a server start."""
AGENT_READY: Final[int]
"""1: waiting for a call."""
AGENT_AUX: Final[int]
"""2: not ready, with a reason such as "Lunch"."""
AGENT_BUSY: Final[int]
"""3: on a call."""
AGENT_STATE_ENUM: Final[Tuple[int, int, int, int]]
"""All four status codes."""
