"""Typed errors that every edge maps to the same HTTP status and JSON body.

Raising one of these means "the caller did something we can explain";
anything else is a bug and becomes an opaque 500 without a stack trace.
"""

from __future__ import annotations


class ClipsearchError(Exception):
    """Base class: carries an HTTP status and a stable machine-readable code."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, str | None]:
        return {"error": self.code, "message": self.message, "field": self.field}


class ValidationError(ClipsearchError):
    status = 400
    code = "invalid_request"


class InvalidImageError(ValidationError):
    code = "invalid_image"


class NotFoundError(ClipsearchError):
    status = 404
    code = "not_found"


class PayloadTooLargeError(ClipsearchError):
    status = 413
    code = "payload_too_large"


class ServiceUnavailableError(ClipsearchError):
    """A dependency (the model endpoint, the index) is cold or throttled."""

    status = 503
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ConfigurationError(ClipsearchError):
    """The deployment or local setup is wrong; the user must change something."""

    code = "configuration_error"
