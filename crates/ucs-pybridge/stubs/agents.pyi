"""The agent a status hook receives (SPEC H2)."""

from typing import Any, ClassVar, ItemsView, Iterator, KeysView, Mapping, ValuesView

class Agent(Mapping[str, Any]):
    """An agent's state BEFORE the change being decided, read-only.

    Readable by attribute (`agent.status`) and as a mapping with the keys
    'id', 'username', 'displayname', 'status' and 'reason', the same keys
    and values as the dicts of `ucs.agents.getAgents()`: `agent['status']`,
    `'status' in agent`, `agent.get('reason')`, `len(agent)`, iteration
    over the keys, `keys()`, `values()`, `items()`, `dict(agent)`.
    `isinstance(agent, collections.abc.Mapping)` holds. An Agent equals
    another Agent with the same fields and any mapping with the same keys
    and values. It is not a dict: `json.dumps(dict(agent))`, not
    `json.dumps(agent)`.
    """
    @property
    def id(self) -> int: ...
    @property
    def username(self) -> str: ...
    @property
    def displayname(self) -> str: ...
    @property
    def status(self) -> int:
        """A code from constants.AGENT_STATE_ENUM."""
    @property
    def reason(self) -> str: ...
    def __getitem__(self, key: str, /) -> Any:
        """The value under `key`; KeyError for any other key."""
    def __contains__(self, key: object, /) -> bool: ...
    def get(self, key: str, default: Any = None, /) -> Any:
        """The value under `key`, or `default` (None unless given)."""
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def keys(self) -> KeysView[str]: ...
    def values(self) -> ValuesView[Any]: ...
    def items(self) -> ItemsView[str, Any]: ...
    def __eq__(self, other: object, /) -> bool: ...
    # Unhashable, as a dict is: equal Agents must not hash differently.
    __hash__: ClassVar[None]  # type: ignore[assignment]
