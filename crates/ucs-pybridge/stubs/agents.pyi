"""The agent a status hook receives (SPEC H2)."""

from typing import Any, List, Optional

class Agent:
    """An agent's state BEFORE the change being decided; readable by
    attribute (`agent.status`) or by key (`agent['status']`)."""
    id: int
    username: str
    displayname: str
    status: int
    """A code from constants.AGENT_STATE_ENUM."""
    reason: str
    def __getitem__(self, key: str) -> Any: ...
    def get(self, key: str, default: Optional[Any] = None) -> Any: ...
    def keys(self) -> List[str]: ...
