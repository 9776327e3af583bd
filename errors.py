"""The error root of assay.

Every error assay raises on purpose is an :class:`AssayError`: a message that says what was
wrong and a ``hint`` that says what to do about it. Subclasses carry the HTTP status the API
server maps them to, in one table (:data:`HTTP_STATUS`).
"""

from __future__ import annotations

__all__ = [
    "HTTP_STATUS",
    "AssayError",
    "ConflictError",
    "IntegrityError",
    "NotFoundError",
    "PermissionDeniedError",
    "ServerUnreachableError",
    "UserInputError",
    "WalWriteError",
]


class AssayError(Exception):
    """Root of assay's errors: ``message`` says what was wrong, ``hint`` what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n  hint: {hint}" if hint else message)


class UserInputError(AssayError, ValueError):
    """The caller passed something invalid (a bad name, value, spec or argument)."""


class NotFoundError(AssayError, LookupError):
    """A run, artifact, agent or other named object does not exist."""


class ConflictError(AssayError):
    """The request conflicts with stored state (a finished run, an existing version, ...)."""


class IntegrityError(AssayError):
    """Stored data does not match its digest or signature."""


class PermissionDeniedError(AssayError):
    """The caller's role does not allow this action."""


class ServerUnreachableError(AssayError, ConnectionError):
    """An ``assay server`` could not be reached, or did not answer in time (a client's
    error: the request may be tried again later)."""


class WalWriteError(AssayError, OSError):
    """Writing a run's write-ahead log failed: the disk refused the write (full, read-only,
    an I/O error). The records are kept in memory and retried until the run finishes."""


HTTP_STATUS: dict[type[AssayError], int] = {
    UserInputError: 400,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    IntegrityError: 422,
    AssayError: 500,
}
