"""API middleware with settings: at most `max_changes` status changes per
agent within `window_seconds` (`ucs.config`), so a stuck softphone cannot
flood the wallboards. Its tests are in tests/, run with `ucs plugin test`."""

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List

from error import ProcessingError

if TYPE_CHECKING:
    from ucs import Ucs

UCS_PLUGIN = 'RateLimit'


class RateLimit:
    def __init__(self, ucs: "Ucs") -> None:
        self.ucs = ucs
        self.max_changes = int(ucs.config.get('max_changes', 5))
        self.window = float(ucs.config.get('window_seconds', 60))
        self.changes: Dict[int, List[float]] = {}
        ucs.api.addMiddleware('agents.setStatus', self.set_status)

    def stop(self) -> None:
        self.ucs.api.removeMiddleware('agents.setStatus', self.set_status)

    def set_status(self, handler: Callable[..., Any], caller: Dict[str, Any],
                   agent_id: int, status: int, reason: str) -> Any:
        now = time.monotonic()
        recent = [at for at in self.changes.get(agent_id, []) if now - at < self.window]
        if len(recent) >= self.max_changes:
            self.ucs.log.warn('agent %d changed status %d times in %gs; refused',
                              agent_id, len(recent), self.window)
            raise ProcessingError(
                f'too many status changes: at most {self.max_changes} in {self.window:g}s')
        result = handler(caller, agent_id, status, reason)
        self.changes[agent_id] = recent + [now]
        return result
