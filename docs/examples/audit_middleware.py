"""API middleware: sees every call of a method, may refuse or change it (SPEC M1-M3)."""

from typing import TYPE_CHECKING, Any, Callable, Dict

from error import InvalidDataInput, PermissionDenied

if TYPE_CHECKING:
    from ucs import Ucs

UCS_PLUGIN = 'AuditMiddleware'


class AuditMiddleware:
    """The first registered middleware is the outermost."""

    def __init__(self, ucs: "Ucs") -> None:
        self.ucs = ucs
        ucs.api.addMiddleware('config.users.add', self.add_user)
        ucs.api.addMiddleware('config.users.delete', self.delete_user)

    def stop(self) -> None:
        self.ucs.api.removeMiddleware('config.users.add', self.add_user)
        self.ucs.api.removeMiddleware('config.users.delete', self.delete_user)

    def add_user(self, handler: Callable[..., Any], caller: Dict[str, Any], data: Dict[str, Any]) -> Any:
        if not data.get('displayname'):
            raise InvalidDataInput({'displayname': 'this site requires a display name'})
        result = handler(caller, data)
        self.ucs.log.info('%s created user %s', caller['username'], result['username'])
        return result

    def delete_user(self, handler: Callable[..., Any], caller: Dict[str, Any], user_id: int) -> Any:
        if caller['id'] != 1:
            raise PermissionDenied('only admin deletes users here')
        return handler(caller, user_id)
