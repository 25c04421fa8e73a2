"""pytest on the real UCS engine: the `ucs_server` fixture.

`ucs plugin test DIR` runs pytest inside the server's own interpreter with
this plugin. Each test that asks for `ucs_server` gets a throwaway,
memory-only server (the real core, API, plugin loader and embedded Python,
no network, nothing stored) with every plugin of DIR loaded, as `ucs serve
--plugins-dir DIR` would load them, and stopped again after the test:

    import constants
    from error import ProcessingError
    import pytest

    def test_lunch_is_refused(ucs_server):
        alice = ucs_server.add_agent("alice")
        with pytest.raises(ProcessingError, match="unknown break reason"):
            ucs_server.set_status(alice, constants.AGENT_AUX, "Lunch")

API errors raise what a plugin's own API calls raise (`error.ProcessingError`,
`error.InvalidDataInput`, `error.PermissionDenied`). A plugin that fails to
load fails the test that asked for the server, with its traceback, unless the
test is marked `@pytest.mark.ucs_allow_load_errors`. Plugin settings
(`ucs.config`) come from `@pytest.mark.ucs_config(plugin_name={...})`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, List, Optional

import pytest

import _ucs_testing

ADMIN = "admin"
"""User 1, a superuser; calls are made as this user unless `user=` says."""

DEFAULT_PASSWORD = "password1"


@dataclasses.dataclass(frozen=True)
class Event:
    """An event the server published: its name and data, as a subscriber of
    `ucs events` gets them, e.g. `agent.status` with `{"agent": {...},
    "previous_status": 0, "previous_reason": ""}`, `shared.data` with
    `{"identificator": ..., "data": ...}`, and `audit.*`."""

    name: str
    data: Any


@dataclasses.dataclass(frozen=True)
class LogRecord:
    """A log record that names a plugin: its own `ucs.log`, `logging` and
    uncaught thread exceptions (target `ucs::plugin`), and what the server
    says about it, e.g. a hook that raised (another target)."""

    level: str
    plugin: Optional[str]
    target: str
    message: str


class UcsServer:
    """One throwaway server; the `ucs_server` fixture makes it."""

    def __init__(self, settings: Optional[Dict[str, Dict[str, Any]]] = None) -> None:
        self._native = _ucs_testing.Server(settings or {})

    # --- users and agents -------------------------------------------------

    def add_user(
        self,
        username: str,
        *,
        displayname: str = "",
        password: str = DEFAULT_PASSWORD,
        agent: bool = False,
        superuser: bool = False,
    ) -> int:
        """Adds a user directly (no middleware runs) and returns its id."""
        return int(self._native.add_user(username, password, displayname, agent, superuser))

    def add_agent(self, username: str, *, displayname: str = "", superuser: bool = False) -> int:
        """Adds an agent, OFFLINE, and returns its id."""
        return self.add_user(username, displayname=displayname, agent=True, superuser=superuser)

    def agents(self, *, user: str = ADMIN) -> List[Dict[str, Any]]:
        """`agents.list`: every agent with its status and reason."""
        return list(self.call("agents.list", user=user))

    def agent(self, agent_id: int) -> Dict[str, Any]:
        """One agent of `agents.list`, by id."""
        for agent in self.agents():
            if agent["id"] == agent_id:
                return dict(agent)
        raise KeyError(agent_id)

    def set_status(self, agent_id: int, status: int, reason: str = "", *, user: str = ADMIN) -> Any:
        """`agents.setStatus` through the status hook and event callbacks."""
        return self.call("agents.setStatus", agent_id, status, reason, user=user)

    # --- shared data ----------------------------------------------------

    def shared(self, identificator: str, *, user: str = ADMIN) -> Any:
        """`shared.get`."""
        return self.call("shared.get", identificator, user=user)

    def set_shared(self, identificator: str, data: Any, *, user: str = ADMIN) -> Any:
        """`shared.set` through the identificator's change hook."""
        return self.call("shared.set", identificator, data, user=user)

    # --- any API method ---------------------------------------------------

    def call(self, method: str, *params: Any, user: str = ADMIN) -> Any:
        """Calls an API method as `user`, through every middleware, with the
        permission checks of a real caller."""
        return self._native.call(user, method, *params)

    # --- plugins --------------------------------------------------------

    def plugins(self) -> List[Dict[str, Any]]:
        """`plugins.list`: every plugin with its state, error and numbers."""
        return list(self.call("plugins.list"))

    def plugin(self, name: str) -> Dict[str, Any]:
        """One plugin of `plugins.list`, by name."""
        for plugin in self.plugins():
            if plugin["name"] == name:
                return dict(plugin)
        raise KeyError(name)

    def load(self, name: str) -> Any:
        """`plugins.load`: loads, or reloads from its file."""
        return self.call("plugins.load", name)

    reload = load

    def unload(self, name: str) -> Any:
        """`plugins.unload`: stops and unloads."""
        return self.call("plugins.unload", name)

    # --- what happened ------------------------------------------------------

    def events(self, name: Optional[str] = None) -> List[Event]:
        """Events published since the server started (or `clear()`),
        oldest first; only those called `name` if given."""
        events = [Event(event, data) for event, data in self._native.events()]
        return [event for event in events if name is None or event.name == name]

    def logs(self, plugin: Optional[str] = None, level: Optional[str] = None) -> List[LogRecord]:
        """Log records naming a plugin since the server started (or
        `clear()`); only `plugin`'s, and only at `level` (`INFO`, `WARN`...)
        if given."""
        records = [LogRecord(*record) for record in self._native.logs()]
        return [
            record
            for record in records
            if (plugin is None or record.plugin == plugin)
            and (level is None or record.level == level.upper())
        ]

    def clear(self) -> None:
        """Forgets the events and log records seen so far."""
        self._native.clear()

    def close(self) -> None:
        """Stops every plugin as a server shutdown does; the fixture calls it."""
        self._native.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ucs_config(**settings): each plugin's ucs.config, by plugin name"
    )
    config.addinivalue_line(
        "markers", "ucs_allow_load_errors: a plugin failing to load does not fail the test"
    )


@pytest.fixture
def ucs_server(request: pytest.FixtureRequest) -> Iterator[UcsServer]:
    """A throwaway server with the plugins under test loaded."""
    marker = request.node.get_closest_marker("ucs_config")
    settings = dict(marker.kwargs) if marker is not None else {}
    server = UcsServer(settings)
    try:
        if request.node.get_closest_marker("ucs_allow_load_errors") is None:
            failed = [plugin for plugin in server.plugins() if plugin.get("state") == "failed"]
            if failed:
                pytest.fail(
                    "\n\n".join(
                        f"plugin {plugin['name']} failed to load: {plugin.get('error')}"
                        for plugin in failed
                    ),
                    pytrace=False,
                )
        yield server
    finally:
        server.close()
