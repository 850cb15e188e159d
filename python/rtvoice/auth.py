"""API keys and ephemeral keys for the Realtime API.

- :func:`resolve_api_key` / :func:`resolve_base_url`: the argument, else ``OPENAI_API_KEY`` /
  ``OPENAI_BASE_URL``, else (base URL only) ``https://api.openai.com/v1``; the same rules as the
  openai SDK.
- :class:`KeyMinter` mints :class:`EphemeralKey`\\ s: GA ``POST {base_url}/realtime/client_secrets``
  (TTL, attached session) or, with ``api_version="beta"``, ``POST {base_url}/realtime/sessions``.
  :meth:`KeyMinter.get` re-mints a key before use once it is within ``margin_s`` of expiring.
- :func:`token_handler` / :func:`add_token_route`: an aiohttp handler a web backend mounts so that
  browser or mobile clients obtain ephemeral keys without ever seeing the standard key.

Secrets are wrapped in :class:`Secret` and never appear in reprs, logs or exception messages:
each Secret registers its value with :func:`rtvoice.errors.track_secret`, so that
:func:`rtvoice.errors.redact` masks it whatever its prefix, e.g. when a server echoes it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import aiohttp
from aiohttp import web

from rtvoice import errors
from rtvoice.errors import RedactingFilter, mask

__all__ = [
    "DEFAULT_BASE_URL",
    "EphemeralKey",
    "KeyMinter",
    "Secret",
    "add_token_route",
    "create_client_secret",
    "resolve_api_key",
    "resolve_base_url",
    "token_handler",
]

logger = logging.getLogger("rtvoice.auth")
logger.addFilter(RedactingFilter())

DEFAULT_BASE_URL = "https://api.openai.com/v1"
MIN_TTL_S = 10
MAX_TTL_S = 7200
DEFAULT_TTL_S = 600
# Beta keys lived one minute and could not be given a TTL before late 2025.
BETA_DEFAULT_TTL_S = 60


class Secret:
    """A string that does not show itself: ``repr``/``str`` give ``Secret('sk-***wxyz')`` (see
    :func:`rtvoice.errors.mask`), and while it lives :func:`rtvoice.errors.redact` masks its
    value in any text, whatever the key's prefix."""

    __slots__ = ("__weakref__", "_value")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise TypeError("a secret must be a non-empty str")
        self._value = value
        errors.track_secret(self, value)

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({mask(self._value)!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(
            other._value.encode(), self._value.encode()
        )

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not picklable")


def resolve_api_key(api_key: str | Secret | None = None) -> Secret:
    """The key from the argument, else ``OPENAI_API_KEY``; else
    :class:`rtvoice.errors.ConfigurationError`."""
    if isinstance(api_key, Secret):
        return api_key
    value = api_key if api_key else os.environ.get("OPENAI_API_KEY")
    if not value:
        raise errors.ConfigurationError(
            "no API key: pass api_key=... or set the OPENAI_API_KEY environment variable"
        )
    return Secret(value)


def resolve_base_url(base_url: str | None = None) -> str:
    """The base URL from the argument, else ``OPENAI_BASE_URL``, else the real API; without a
    trailing slash (as in the openai SDK, it includes the ``/v1`` prefix)."""
    url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise errors.ConfigurationError(f"base_url must be an http(s) URL, got {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True)
class EphemeralKey:
    """An ephemeral client key (``ek_…``). ``expires_at`` is a Unix time in seconds; per the API
    it only bounds *creating* sessions. ``session`` is the effective session the server attached
    (GA) or the session object (beta), when the server returned one."""

    secret: Secret
    expires_at: float
    session: dict[str, Any] | None = field(default=None, repr=False)
    api_version: Literal["ga", "beta"] = "ga"

    @property
    def value(self) -> str:
        """The key itself, for an ``Authorization: Bearer`` header."""
        return self.secret.get_secret_value()

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)

    def expired(self, margin_s: float = 0.0, now: float | None = None) -> bool:
        """True once fewer than ``margin_s`` seconds remain."""
        return self.seconds_left(now) <= margin_s

    def __repr__(self) -> str:
        return (
            f"EphemeralKey({mask(self.value)!r}, expires_at={self.expires_at:.0f}, "
            f"api_version={self.api_version!r})"
        )


def _check_ttl(ttl_s: int | None) -> None:
    if ttl_s is None:
        return
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int):
        raise TypeError(f"ttl_s must be an int number of seconds, got {type(ttl_s).__name__}")
    if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be within {MIN_TTL_S}..{MAX_TTL_S} seconds, got {ttl_s}")


def _parse_key(body: Any, api_version: Literal["ga", "beta"]) -> EphemeralKey:
    if not isinstance(body, Mapping):
        raise errors.ProtocolError("the key endpoint returned something other than a JSON object")
    if api_version == "ga":
        value, expires_at, session = body.get("value"), body.get("expires_at"), body.get("session")
    else:
        cs = body.get("client_secret")
        if not isinstance(cs, Mapping):
            raise errors.ProtocolError("the beta sessions response has no client_secret object")
        value, expires_at = cs.get("value"), cs.get("expires_at")
        session = {k: v for k, v in body.items() if k != "client_secret"}
    if not isinstance(value, str) or not value:
        raise errors.ProtocolError("the key endpoint returned no key value")
    if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
        raise errors.ProtocolError("the key endpoint returned no numeric expires_at")
    return EphemeralKey(
        secret=Secret(value),
        expires_at=float(expires_at),
        session=dict(session) if isinstance(session, Mapping) else None,
        api_version=api_version,
    )


async def _read_body(resp: aiohttp.ClientResponse) -> Any:
    text = await resp.text(errors="replace")
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


async def create_client_secret(
    *,
    api_key: str | Secret | None = None,
    base_url: str | None = None,
    session: Mapping[str, Any] | None = None,
    ttl_s: int | None = None,
    api_version: Literal["ga", "beta"] = "ga",
    http: aiohttp.ClientSession | None = None,
    timeout_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> EphemeralKey:
    """Mint one ephemeral key.

    GA: ``session`` is a GA session config (``type`` defaults to ``"realtime"``), ``ttl_s`` goes
    to ``expires_after`` (10-7200 s; the server defaults to 600). Beta: ``session`` is sent as the
    flat beta body (a GA-shaped config is converted), ``ttl_s`` as ``client_secret.expires_after``.
    """
    from rtvoice.events import session_ga_to_beta

    if api_version not in ("ga", "beta"):
        raise ValueError(f"api_version must be 'ga' or 'beta', got {api_version!r}")
    _check_ttl(ttl_s)
    key = resolve_api_key(api_key)
    url_base = resolve_base_url(base_url)
    body: dict[str, Any]
    if api_version == "ga":
        url = f"{url_base}/realtime/client_secrets"
        body = {}
        if ttl_s is not None:
            body["expires_after"] = {"anchor": "created_at", "seconds": ttl_s}
        if session is not None:
            sess = dict(session)
            sess.setdefault("type", "realtime")
            body["session"] = sess
    else:
        url = f"{url_base}/realtime/sessions"
        sess = dict(session) if session is not None else {}
        body = session_ga_to_beta(sess) if ("type" in sess or "audio" in sess) else sess
        if ttl_s is not None:
            body["client_secret"] = {"expires_after": {"anchor": "created_at", "seconds": ttl_s}}
    req_headers = {"Authorization": f"Bearer {key.get_secret_value()}", **(headers or {})}
    own = http is None
    client = http or aiohttp.ClientSession()
    try:
        try:
            async with client.post(
                url, json=body, headers=req_headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                payload = await _read_body(resp)
                if resp.status != 200:
                    raise errors.error_from_response(
                        resp.status,
                        payload,
                        request_id=resp.headers.get("x-request-id"),
                        context="minting an ephemeral key",
                        headers=dict(resp.headers),
                    )
        except TimeoutError:
            raise errors.TimeoutError(
                f"minting an ephemeral key at {url} timed out after {timeout_s} s"
            ) from None
        except aiohttp.ClientError as exc:
            # `from None`: the chained aiohttp error is not needed and is kept out of tracebacks.
            raise errors.ConnectionError(
                f"cannot reach {url}: {type(exc).__name__}: {exc}"
            ) from None
    finally:
        if own:
            await client.close()
    ek = _parse_key(payload, api_version)
    logger.debug("minted %r", ek)
    return ek


class KeyMinter:
    """Mints and caches ephemeral keys for one configuration.

    ``await minter.get()`` returns the cached key while more than ``margin_s`` seconds remain,
    and mints a new one otherwise. ``clock`` returns Unix seconds (injectable for tests).
    Use it from one event loop; ``aclose()`` releases the HTTP session it created.
    """

    def __init__(
        self,
        api_key: str | Secret | None = None,
        base_url: str | None = None,
        *,
        session: Mapping[str, Any] | None = None,
        ttl_s: int | None = None,
        api_version: Literal["ga", "beta"] = "ga",
        margin_s: float = 10.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        _check_ttl(ttl_s)
        if api_version not in ("ga", "beta"):
            raise ValueError(f"api_version must be 'ga' or 'beta', got {api_version!r}")
        if margin_s < 0:
            raise ValueError(f"margin_s must be >= 0, got {margin_s}")
        self._api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.session_config = dict(session) if session is not None else None
        self.ttl_s = ttl_s
        self.api_version: Literal["ga", "beta"] = api_version
        self.margin_s = margin_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._http = http
        self._own_http = http is None
        self._key: EphemeralKey | None = None
        self._lock = asyncio.Lock()
        self.minted = 0

    def __repr__(self) -> str:
        return (
            f"KeyMinter(base_url={self.base_url!r}, api_version={self.api_version!r}, "
            f"api_key={self._api_key!r}, key={self._key!r})"
        )

    @property
    def current(self) -> EphemeralKey | None:
        return self._key

    async def mint(self) -> EphemeralKey:
        """Mint a new key now (and cache it)."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
            self._own_http = True
        self._key = await create_client_secret(
            api_key=self._api_key,
            base_url=self.base_url,
            session=self.session_config,
            ttl_s=self.ttl_s,
            api_version=self.api_version,
            http=self._http,
            timeout_s=self.timeout_s,
        )
        self.minted += 1
        return self._key

    def invalidate(self) -> None:
        """Forget the cached key (the server refused it): the next :meth:`get` mints anew."""
        self._key = None

    async def get(self) -> EphemeralKey:
        """The cached key, re-minted first if it expires within ``margin_s``."""
        async with self._lock:  # concurrent callers share one mint
            key = self._key
            if key is None or key.expired(self.margin_s, now=self._clock()):
                key = await self.mint()
            return key

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()
        self._http = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# --------------------------------------------------------------------------------------------
# Token endpoint for web backends

MintFn = Callable[[], Awaitable[EphemeralKey]]


def token_handler(minter: KeyMinter | MintFn) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler that answers with a fresh ephemeral key::

        {"value": "ek_…", "expires_at": 1756324625, "session": {…}}

    ``minter`` is a :class:`KeyMinter` (a new key is minted per request: each client gets its own)
    or any coroutine function returning an :class:`EphemeralKey`. The request body is ignored, so
    a client cannot change the session configuration chosen by the backend. Authenticate your own
    users before mounting it (e.g. in a middleware). Upstream failures become 502 (401 from
    upstream stays an error of the backend's configuration, not of the client) with the API's
    error envelope; the standard key never leaves the backend.
    """
    mint: MintFn = minter.mint if isinstance(minter, KeyMinter) else minter

    async def handler(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "no-store"}
        try:
            key = await mint()
        except errors.APIError as exc:
            logger.warning("token endpoint: upstream refused to mint a key: %s", exc)
            body = {
                "error": {
                    "message": "could not mint an ephemeral key",
                    "type": "upstream_error",
                    "param": None,
                    "code": exc.code,
                    "upstream_status": exc.status,
                }
            }
            return web.json_response(body, status=502, headers=headers)
        except errors.RtvoiceError as exc:
            logger.warning("token endpoint: %s", exc)
            body = {
                "error": {
                    "message": "could not mint an ephemeral key",
                    "type": "upstream_unavailable",
                    "param": None,
                    "code": None,
                }
            }
            return web.json_response(body, status=502, headers=headers)
        out: dict[str, Any] = {"value": key.value, "expires_at": int(key.expires_at)}
        if key.session is not None:
            out["session"] = key.session
        return web.json_response(out, headers=headers)

    return handler


def add_token_route(
    app: web.Application, minter: KeyMinter | MintFn, path: str = "/token"
) -> web.AbstractRoute:
    """Mount :func:`token_handler` at ``POST path`` on ``app``."""
    return app.router.add_post(path, token_handler(minter))
