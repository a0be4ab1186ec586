"""The errors Tidal reports to users, with their canonical codes (gRPC/TF Serving's)."""

from __future__ import annotations

from enum import Enum


class Code(str, Enum):
    OK = "OK"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    DATA_LOSS = "DATA_LOSS"
    UNAUTHENTICATED = "UNAUTHENTICATED"


# The one table from canonical code to HTTP status (TF Serving's http_rest_api_util.cc).
HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.OUT_OF_RANGE: 400,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409,
    Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}


def http_status(code: Code) -> int:
    return HTTP_STATUS.get(code, 500)


class TidalError(Exception):
    """An error with a message meant for the user and a canonical code."""

    code: Code = Code.UNKNOWN

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        return http_status(self.code)


class InvalidArgument(TidalError):
    code = Code.INVALID_ARGUMENT


class NotFound(TidalError):
    code = Code.NOT_FOUND


class FailedPrecondition(TidalError):
    code = Code.FAILED_PRECONDITION


class AlreadyExists(TidalError):
    code = Code.ALREADY_EXISTS


class ResourceExhausted(TidalError):
    code = Code.RESOURCE_EXHAUSTED


class Unavailable(TidalError):
    code = Code.UNAVAILABLE


class CapacityUnavailable(Unavailable):
    """A launch the provider refused for lack of capacity (a spot zone with none left)."""


class Unimplemented(TidalError):
    code = Code.UNIMPLEMENTED


class Unauthenticated(TidalError):
    code = Code.UNAUTHENTICATED


class DeadlineExceeded(TidalError):
    code = Code.DEADLINE_EXCEEDED


class Cancelled(TidalError):
    code = Code.CANCELLED


class Internal(TidalError):
    code = Code.INTERNAL


class UserError(Exception):
    """A mistake on the command line or in a file: printed as one line, exit status 2."""
