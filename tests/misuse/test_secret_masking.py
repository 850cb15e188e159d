"""Every key is masked in reprs, exceptions and log records, whatever its prefix."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rtvoice import auth, errors

# Keys of shapes the prefix patterns do not know: a gateway token, a bare hex key, a dotted one.
ODD_KEYS = [
    "corp-gw-7f3a9c21d4e5b6a7980112233445WXYZ",
    "0123456789abcdef0123456789abcdef",
    "tenant.42.Zq8Lm3Np5Rt7Vx9Bc1Df3Gh5",
]


def leaked(secret: str, text: str) -> list[str]:
    """Every 5-character piece of ``secret`` found in ``text``: at most 4 characters may show."""
    return [secret[i : i + 5] for i in range(len(secret) - 4) if secret[i : i + 5] in text]


@pytest.mark.parametrize("value", ODD_KEYS)
def test_keys_are_masked_in_secret_repr_and_str_whatever_their_prefix(value: str) -> None:
    secret = auth.Secret(value)
    for text in (repr(secret), str(secret), f"{secret}", repr([secret]), repr({"k": secret})):
        assert leaked(value, text) == []
        assert "***" in text


def test_a_secret_shows_at_most_its_last_4_characters_and_only_when_long() -> None:
    assert repr(auth.Secret(ODD_KEYS[0])) == "Secret('***WXYZ')"
    assert repr(auth.Secret("sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789")) == (
        "Secret('sk-***6789')"
    )
    assert repr(auth.Secret("hunter2hunter2")) == "Secret('***')"
    assert repr(auth.Secret("sk-short12345")) == "Secret('sk-***')"


@pytest.mark.parametrize("value", ODD_KEYS)
def test_an_api_error_from_a_response_echoing_the_key_is_masked(value: str) -> None:
    secret = auth.Secret(value)
    body = {
        "error": {"message": f"Incorrect API key provided: {value}.", "code": "invalid_api_key"}
    }
    exc = errors.error_from_response(401, body, context="minting an ephemeral key")
    assert isinstance(exc, errors.AuthenticationError)
    for text in (str(exc), repr(exc), exc.message, *map(str, exc.args)):
        assert leaked(value, text) == []
    text_exc = errors.error_from_response(401, f"bad key {value}".encode())
    assert leaked(value, str(text_exc)) == []
    event_exc = errors.error_from_event({"type": "error", "error": {"message": f"key {value}"}})
    assert leaked(value, str(event_exc)) == []
    del secret


def test_redact_masks_a_tracked_value_while_a_secret_holds_it_and_forgets_it_after() -> None:
    value = "gateway-token-only-once-9f8e7d6c5b4a"
    first, second = auth.Secret(value), auth.Secret(value)
    assert leaked(value, errors.redact(f"echo: {value}")) == []
    del first
    gc.collect()
    assert leaked(value, errors.redact(f"echo: {value}")) == []  # `second` still holds it
    del second
    gc.collect()
    assert errors.redact(f"echo: {value}") == f"echo: {value}"


def test_an_unprefixed_key_echoed_by_the_upstream_is_masked_in_the_error_and_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    value = ODD_KEYS[0]

    async def upstream(request: web.Request) -> web.Response:
        got = request.headers.get("Authorization", "")
        message = f"Incorrect API key provided: {got.removeprefix('Bearer ')}."
        return web.json_response(
            {"error": {"message": message, "code": "invalid_api_key"}}, status=401
        )

    async def main() -> tuple[str, int]:
        api = web.Application()
        api.router.add_post("/v1/realtime/client_secrets", upstream)
        async with TestServer(api, host="127.0.0.1", port=0) as server:
            base = str(server.make_url("/v1"))
            with pytest.raises(errors.AuthenticationError) as info:
                await auth.create_client_secret(api_key=value, base_url=base)
            async with auth.KeyMinter(value, base) as minter:
                backend = web.Application()
                auth.add_token_route(backend, minter)
                async with TestClient(TestServer(backend, host="127.0.0.1", port=0)) as client:
                    resp = await client.post("/token")
                    body = await resp.text()
            return f"{info.value}\n{info.value!r}\n{body}", resp.status

    caplog.set_level(logging.DEBUG)
    texts, status = asyncio.run(main())
    assert status == 502
    assert "Incorrect API key provided: ***WXYZ." in texts
    assert any(r.name == "rtvoice.auth" for r in caplog.records)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert leaked(value, texts) == []
    assert leaked(value, logged) == []
    assert leaked(value, caplog.text) == []


def test_a_log_record_on_the_auth_logger_is_redacted_including_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    value = ODD_KEYS[1]
    secret = auth.Secret(value)
    log = logging.getLogger("rtvoice.auth")
    caplog.set_level(logging.INFO)
    args: Any = (value,)
    log.info("upstream answered with %s", *args)
    try:
        raise RuntimeError(f"proxy rejected {value}")
    except RuntimeError:
        log.exception("minting failed")
    assert len(caplog.records) == 2
    for record in caplog.records:
        assert leaked(value, record.getMessage() + (record.exc_text or "")) == []
    assert leaked(value, caplog.text) == []
    assert "upstream answered with ***" in caplog.text
    del secret


def test_redacting_filter_can_be_attached_to_any_logger(caplog: pytest.LogCaptureFixture) -> None:
    value = ODD_KEYS[2]
    secret = auth.Secret(value)
    log = logging.getLogger("rtvoice.test_secret_masking")
    redacting = errors.RedactingFilter()
    log.addFilter(redacting)
    try:
        with caplog.at_level(logging.INFO):
            log.info("dialing with %s and %r", value, {"key": value})
    finally:
        log.removeFilter(redacting)
    assert len(caplog.records) == 1
    assert leaked(value, caplog.text) == []
    del secret
