"""Errors plugins raise and catch (SPEC M3, H5, S3)."""

from typing import Dict

class UcsError(Exception):
    """Base class of every UCS error."""

class ProcessingError(UcsError):
    """The operation was refused. Raise it in a status or shared-data hook to
    block the change; raised by the server for a second status hook, an
    unknown event or an unknown API method in addMiddleware."""

class InvalidDataInput(UcsError):
    """Bad input: the first argument is a dict of field -> message, which the
    API caller receives as is."""
    def __init__(self, fields: Dict[str, str]) -> None: ...

class PermissionDenied(UcsError):
    """The caller may not do this."""

class DeadlineExceeded(BaseException):
    """Raised by the server into a hook, callback or middleware that ran past
    its deadline (SPEC I3; `ucs serve --hook-deadline`). Not an Exception, so
    `except Exception:` does not catch it: let it propagate."""
