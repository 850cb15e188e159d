"""The rtvoice exception hierarchy.

Every error rtvoice raises on purpose derives from :class:`RtvoiceError`. HTTP failures map onto
the same classes as the openai SDK (status 400 → :class:`BadRequestError`, 401 →
:class:`AuthenticationError`, …) and carry the fields of the API's error envelope
``{"error": {"message", "type", "param", "code"}}``.

No message built here ever contains a secret: :func:`redact` masks, in any text that reaches an
exception, a repr or a log record, every secret value alive in the process (each
:class:`rtvoice.auth.Secret` registers its value through :func:`track_secret`, whatever its shape)
and anything shaped like a key: standard keys (``sk-…``), ephemeral keys (``ek_…``), bearer tokens.
"""

from __future__ import annotations

import email.utils
import logging
import re
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

# The native codec error, re-exported so that this module lists every rtvoice error.
from rtvoice._core import OpusError

__all__ = [
    "APIError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "ConnectionError",
    "InternalServerError",
    "LiveSessionClosedError",
    "NotFoundError",
    "OpusError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "ReconnectFailedError",
    "RedactingFilter",
    "RtvoiceError",
    "SendQueueFullError",
    "ServerEventError",
    "SessionError",
    "SessionExpiredError",
    "TimeoutError",
    "TransportError",
    "UnprocessableEntityError",
    "UnsupportedError",
    "WebRTCUnavailableError",
    "error_from_event",
    "error_from_response",
    "mask",
    "parse_retry_after",
    "redact",
    "track_secret",
]

# Standard keys: sk-..., sk-proj-..., sk-svcacct-...; ephemeral keys: ek_...; beta-era eph_....
# Bearer tokens of any shape are masked too, since an Authorization header may hold either.
_SECRET_RE = re.compile(
    r"(?:\bsk-[A-Za-z0-9_\-]{4,}|\bek_[A-Za-z0-9_\-]{4,}|\beph_[A-Za-z0-9_\-]{4,}"
    r"|(?<=Bearer )[A-Za-z0-9_\-\.]{8,}|(?<=openai-insecure-api-key\.)[A-Za-z0-9_\-\.]{4,})"
)


_KIND_TAGS = ("sk-", "ek_", "eph_")
# A tracked value shorter than this is not scrubbed from free text (it would mangle ordinary
# words); it is still masked wherever a Secret shows itself.
MIN_TRACKED_CHARS = 8
# The last 4 characters are shown only when at least this many stay hidden.
_MIN_HIDDEN_CHARS = 16


def mask(secret: str) -> str:
    """The shown form of a secret: its kind tag when it has one (``sk-``, ``ek_``, ``eph_``: a
    format marker, not secret), ``***``, and at most its last 4 characters, shown only when 16
    or more stay hidden (``sk-***wxyz``, ``***3456``, ``***``)."""
    tag = next((t for t in _KIND_TAGS if secret.startswith(t)), "")
    body = secret[len(tag) :]
    tail = body[-4:] if len(body) >= _MIN_HIDDEN_CHARS + 4 else ""
    return f"{tag}***{tail}"


class _TrackedSecrets:
    """The secret values currently alive, counted per value (two owners may hold one value).

    Any thread: :func:`redact` runs wherever an exception or a log record is made, and a finalizer
    may run inside a locked section when garbage collection triggers there, hence the RLock.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.RLock()
        self._pattern: re.Pattern[str] | None = None

    def track(self, owner: object, value: str) -> None:
        if len(value) < MIN_TRACKED_CHARS:
            return
        with self._lock:
            self._counts[value] = self._counts.get(value, 0) + 1
            self._pattern = None
        weakref.finalize(owner, self._release, value).atexit = False

    def _release(self, value: str) -> None:
        with self._lock:
            left = self._counts.get(value, 0) - 1
            if left > 0:
                self._counts[value] = left
            else:
                self._counts.pop(value, None)
            self._pattern = None

    def sub(self, text: str) -> str:
        with self._lock:
            if not self._counts:
                return text
            if self._pattern is None:
                # Longest first, so that a value containing another is masked whole.
                values = sorted(self._counts, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, values)))
            pattern = self._pattern
        return pattern.sub(lambda m: mask(m.group(0)), text)


_TRACKED = _TrackedSecrets()


def track_secret(owner: object, value: str) -> None:
    """Make :func:`redact` mask ``value`` for as long as ``owner`` (weakly referenced) lives."""
    _TRACKED.track(owner, value)


def redact(text: str) -> str:
    """Return ``text`` with every tracked secret value and every API key, ephemeral key or bearer
    token masked (see :func:`mask`)."""
    return _SECRET_RE.sub(lambda m: mask(m.group(0)), _TRACKED.sub(text))


class RedactingFilter(logging.Filter):
    """A logging filter that passes :func:`redact` over a record's message and exception text.

    Attach it to a logger (``logger.addFilter(RedactingFilter())``) or to a handler; a logger's
    filter sees only the records logged on that very logger, not those of its children.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class RtvoiceError(Exception):
    """Base class of every error rtvoice raises on purpose."""

    def __init__(self, message: str) -> None:
        self.message = redact(message)
        super().__init__(self.message)


class ConfigurationError(RtvoiceError, ValueError):
    """Missing or unusable configuration: no API key, a base URL that is not http(s), ..."""


class ConnectionError(RtvoiceError):
    """The server could not be reached (DNS, TCP, TLS, refused, reset)."""


class TimeoutError(ConnectionError):
    """A request, the ICE/DTLS handshake or the wait for ``session.created`` timed out."""


class TransportError(RtvoiceError):
    """The WebRTC or WebSocket transport failed after it was set up (ICE failed, channel closed,
    message too large for the data channel, ...)."""


class WebRTCUnavailableError(TransportError):
    """The calls endpoint answered but WebRTC could not connect: ICE or DTLS did not complete
    within ``ice_timeout_s``, ICE failed, or the SDP answer was unusable. With
    ``transport="auto"`` the session falls back to WebSocket instead of raising this."""


class ProtocolError(RtvoiceError):
    """The peer broke the protocol: an answer that is not SDP, a missing ``Location``, an event
    that cannot be used, ..."""


class SessionError(RtvoiceError):
    """A session-level failure: used after close, not connected, a response already active, ..."""


class SendQueueFullError(SessionError):
    """:meth:`RealtimeSession.send` while the session is reconnecting, with the queue of events
    waiting for the new call full (``reconnect_queue_bytes``): this event was not queued."""


class UnsupportedError(SessionError):
    """An operation the session's API does not have (the Live API has no truncation, manual
    commit or ``response.cancel``; Realtime has no mute): the message names what to do instead."""


class LiveSessionClosedError(SessionError):
    """The server closed a Live session for a reason that ends it (``content``: the safety
    filter). ``reason`` is the ``session.closed`` reason."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReconnectFailedError(SessionError):
    """The call was lost and every reconnection attempt failed: the session is ``failed``.
    ``unsent_event_ids`` are the events queued while reconnecting that never reached a server."""

    def __init__(self, message: str, *, unsent_event_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.unsent_event_ids = unsent_event_ids


class APIError(RtvoiceError):
    """An error reported by the API, over HTTP or as an ``error`` event.

    ``type``, ``code`` and ``param`` are the fields of the error envelope (``None`` when absent).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.event_id = event_id

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, type={self.type!r}, "
            f"code={self.code!r}, message={self.message!r})"
        )


class APIStatusError(APIError):
    """An HTTP response with a 4xx/5xx status."""

    status: int

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, status=status, type=type, code=code, param=param)
        self.request_id = request_id
        # The response's Retry-After (seconds form; an HTTP date is converted), when it had one.
        self.retry_after_s = retry_after_s


class BadRequestError(APIStatusError):
    """HTTP 400, e.g. ``invalid_offer`` for an SDP offer without an audio section."""


class AuthenticationError(APIStatusError):
    """HTTP 401: unknown, revoked or expired key (``invalid_api_key``)."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403."""


class NotFoundError(APIStatusError):
    """HTTP 404."""


class ConflictError(APIStatusError):
    """HTTP 409."""


class UnprocessableEntityError(APIStatusError):
    """HTTP 422."""


class RateLimitError(APIStatusError):
    """HTTP 429."""


class InternalServerError(APIStatusError):
    """HTTP 5xx."""


class ServerEventError(APIError):
    """An ``error`` event received in a session. ``event_id`` is the id of the client event that
    caused it (``None`` if the error is not tied to one)."""


class SessionExpiredError(ServerEventError):
    """The session reached its maximum duration (``session_expired``)."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None when
    absent or unreadable. Negative waits become 0."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or inf
        return None
    return max(seconds, 0.0)


def error_from_response(
    status: int,
    body: Any,
    *,
    request_id: str | None = None,
    context: str = "",
    headers: Mapping[str, str] | None = None,
) -> APIStatusError:
    """Build the error for an HTTP ``status`` and its decoded body (a dict, text, bytes or None).
    ``headers``: the response's, for ``Retry-After``.

    The message follows the openai SDK: ``"Error code: <status> - <error.message>"``.
    """
    envelope: Mapping[str, Any] = {}
    if isinstance(body, Mapping):
        inner = body.get("error")
        envelope = inner if isinstance(inner, Mapping) else body
    detail = envelope.get("message") if envelope else None
    if not isinstance(detail, str) or not detail:
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        detail = body.strip()[:200] if isinstance(body, str) and body.strip() else "(empty body)"
    prefix = f"{context}: " if context else ""
    cls = _STATUS_CLASSES.get(status, InternalServerError if status >= 500 else APIStatusError)

    def _str(key: str) -> str | None:
        value = envelope.get(key) if envelope else None
        return value if isinstance(value, str) else None

    return cls(
        f"{prefix}Error code: {status} - {detail}",
        status=status,
        type=_str("type"),
        code=_str("code"),
        param=_str("param"),
        request_id=request_id,
        retry_after_s=parse_retry_after(headers.get("Retry-After")) if headers else None,
    )


def error_from_event(event: Mapping[str, Any]) -> ServerEventError:
    """Build the error for a server ``error`` event (``{"type":"error","error":{...}}``)."""
    err = event.get("error")
    if not isinstance(err, Mapping):
        err = {}
    code = err.get("code") if isinstance(err.get("code"), str) else None
    cls = SessionExpiredError if code == "session_expired" else ServerEventError
    message = err.get("message")
    return cls(
        message if isinstance(message, str) and message else "error event without a message",
        type=err.get("type") if isinstance(err.get("type"), str) else None,
        code=code,
        param=err.get("param") if isinstance(err.get("param"), str) else None,
        event_id=_first_str(err, "event_id", "client_event_id"),
    )


def _first_str(mapping: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, str):
            return value
    return None
