"""Typed errors that every edge maps to the same HTTP status and JSON body.

Raising one of these means "the caller did something we can explain";
anything else is a bug and becomes an opaque 500 without a stack trace.

What a client sees (issue #18): a 4xx body carries the message, which names
the problem in the request. A 5xx body carries only `public_text`, a fixed
sentence per class: the message of a server-side failure tends to quote our
infrastructure (hosts, ports, endpoint names, paths, library internals), and
it goes to the log instead. Error bodies are always serialisable: strings
that quote input are scrubbed of lone surrogates.
"""

from __future__ import annotations


class ClipsearchError(Exception):
    """Base class: carries an HTTP status and a stable machine-readable code."""

    status = 500
    code = "internal_error"
    public_text = "internal server error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    @property
    def public_message(self) -> str:
        """What a client may read: the message for its own mistakes, else public_text."""
        return self.message if self.status < 500 else self.public_text

    def to_body(self) -> dict[str, str | None]:
        from clipsearch.strict import scrub

        return scrub({"error": self.code, "message": self.public_message, "field": self.field})


class ValidationError(ClipsearchError):
    status = 400
    code = "invalid_request"


class InvalidImageError(ValidationError):
    code = "invalid_image"


class NotFoundError(ClipsearchError):
    status = 404
    code = "not_found"


class HostNotAllowedError(ValidationError):
    """The local server was reached under a name it does not answer (DNS rebinding)."""

    code = "host_not_allowed"


class RequestTimeoutError(ClipsearchError):
    """The client did not send its request body in time."""

    status = 408
    code = "request_timeout"


class PayloadTooLargeError(ClipsearchError):
    status = 413
    code = "payload_too_large"


class ServiceUnavailableError(ClipsearchError):
    """A dependency (the model endpoint, the index) is cold or throttled."""

    status = 503
    code = "service_unavailable"
    public_text = "a service this request needs is temporarily unavailable; retry shortly"

    def __init__(self, message: str, *, retry_after: int = 5, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class OutOfTimeError(ServiceUnavailableError):
    """The invocation's deadline came before this work could start or finish.

    A kind of unavailability (retrying later helps), named apart so logs and
    reports say why: the work was left for a redelivery, nothing was wrong with it.
    """

    code = "out_of_time"


class ModelMismatchError(ServiceUnavailableError):
    """The model endpoint serves another model than the index was built with.

    Expected for a few minutes in the middle of a model switch (the endpoint
    is updated before the bootstrap moves the alias), so callers get a 503 to
    retry, not a 500; the log names both models. If it lasts, the endpoint's
    artifact, the stack's model_name and the index disagree.
    """

    code = "model_mismatch"

    def __init__(self, message: str, **kwargs):
        kwargs.setdefault("retry_after", 30)
        super().__init__(message, **kwargs)


class ConfigurationError(ClipsearchError):
    """The deployment or local setup is wrong; the user must change something."""

    code = "configuration_error"
    public_text = ("the service is not configured correctly; the operator will find the "
                   "details in the server log")
