"""A shared-data hook that validates and normalises data (SPEC S1-S4, D4)."""

from typing import TYPE_CHECKING, Any, Dict

from error import ProcessingError

if TYPE_CHECKING:
    from ucs import Ucs

UCS_PLUGIN = 'EmailCounts'


class EmailCounts:
    """Stores {user_id: count}; int keys come back as ints."""

    def __init__(self, ucs: "Ucs") -> None:
        self.ucs = ucs
        ucs.shared.addChangeHook('email_counts', self.hook)

    def stop(self) -> None:
        self.ucs.shared.removeChangeHook('email_counts')

    def hook(self, identificator: str, old_data: Any, new_data: Any) -> Dict[int, int]:
        if not isinstance(new_data, dict):
            raise ProcessingError('email_counts must be a dict of username -> count')
        ids = {name: user_id for user_id, name in self.ucs.tree.getUsers('username').items()}
        stored: Dict[int, int] = {}
        for username, count in new_data.items():
            if username in ids and isinstance(count, int):
                stored[ids[username]] = count
        return stored
