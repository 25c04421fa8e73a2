"""The server object every plugin receives as its constructor's only
argument (SPEC section 6). There is no `ucs` module at run time: annotate
with it for completion under TYPE_CHECKING only:

    from typing import TYPE_CHECKING
    if TYPE_CHECKING:
        from ucs import Ucs

    class MyPlugin:
        def __init__(self, ucs: "Ucs") -> None: ...
"""

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from agents import Agent

StatusHook = Callable[[Agent, int, str], Tuple[Optional[int], str]]
SharedHook = Callable[[str, Any, Any], Any]

class Log:
    """printf-style logging (`%` arguments); every record names the plugin."""
    def dev(self, message: str, *args: Any) -> None:
        """Trace level."""
    def dbug(self, message: str, *args: Any) -> None:
        """Debug level."""
    def info(self, message: str, *args: Any) -> None:
        """Info level."""
    def warn(self, message: str, *args: Any) -> None:
        """Warning level."""
    def err(self, message: str, *args: Any) -> None:
        """Error level."""

class Agents:
    def getAgents(self) -> List[Dict[str, Any]]:
        """Every agent as a dict: id, username, displayname, status, reason."""
    def addChangeStatusHook(self, callback: StatusHook) -> None:
        """Registers THE status hook: only one in the whole server; a second
        registration raises ProcessingError (H1). The hook gets the agent
        before the change, the requested status and reason; it returns them
        unchanged to let the change through (H3), other values to switch to
        those instead (H4), or (None, reason) to block (H5, an empty reason
        means 'Blocked by hook'). Raising ProcessingError blocks too; any other
        exception is logged and the requested change is applied (H6)."""
    def removeChangeStatusHook(self) -> None:
        """Removes the status hook if this plugin owns it; otherwise warns."""

class Shared:
    def get(self, identificator: str) -> Any:
        """The data stored; {} if never set. Int dict keys are kept (D4)."""
    def addChangeHook(self, identificator: str, callback: SharedHook) -> None:
        """One hook per identificator; a second raises ProcessingError (S1).
        `callback(identificator, old_data, new_data)` returns what to store
        (S2); raising ProcessingError blocks the change (S3); any other
        exception is logged and new_data is stored (S4)."""
    def removeChangeHook(self, identificator: str) -> None:
        """Removes the hook of `identificator` if this plugin owns it."""

class Tree:
    def getUsers(self, field: str) -> Dict[int, Any]:
        """{user_id: that field} for every user, e.g. getUsers('username')."""

class Api:
    def addMiddleware(self, method: str, middleware: Callable[..., Any]) -> None:
        """Wraps API method `method` (e.g. 'config.users.get'):
        `middleware(handler, caller, *params)` must call `handler` or raise,
        and returns the result. The first registered is the outermost (D2).
        An unknown method raises ProcessingError (M1)."""
    def removeMiddleware(self, method: str, middleware: Callable[..., Any]) -> None:
        """Unwraps a middleware equal (==) to `middleware`."""
    def __getattr__(self, name: str) -> Any:
        """Every API method by dotted name: ucs.api.config.users.get(sid, 2)."""

class Ucs:
    log: Log
    agents: Agents
    shared: Shared
    tree: Tree
    api: Api
    sid: str
    """This plugin's own session (it acts as user 1), for ucs.api calls."""
    config: Mapping[str, Any]
    """This plugin's settings: the `[plugins.NAME.config]` table of the
    server's --config file, read again at every load (a reload sees an
    edit); `{ env = "VAR" }` there is the environment variable VAR. Read-only
    all the way down (nested tables are mappings, arrays tuples); empty when
    none were given."""
    def addCallback(self, event: str, callback: Callable[..., Any]) -> None:
        """Registers `callback` for an event from module `events`; an unknown
        event raises ProcessingError (E2). Unregister it in stop(): what a
        plugin leaves registered is removed on unload with a warning (P7)."""
    def removeCallback(self, event: str, callback: Callable[..., Any]) -> None:
        """Removes a callback equal (==) to `callback`, so `self.method` works."""
