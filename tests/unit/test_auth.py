from __future__ import annotations

import asyncio
import json
import logging
import pickle
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from rtvoice import auth, errors

STANDARD_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
EPHEMERAL = "ek_68af296e8e408191a1120ab6383263c2"


class FakeApi:
    """A minimal upstream: records requests, answers with a scripted status/body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.body: Any = None
        self.counter = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/realtime/client_secrets", self.handle)
        app.router.add_post("/v1/realtime/sessions", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            {
                "path": request.path,
                "auth": request.headers.get("Authorization"),
                "json": await request.json(),
            }
        )
        self.counter += 1
        if self.status != 200:
            if isinstance(self.body, str):
                return web.Response(status=self.status, text=self.body)
            return web.json_response(self.body, status=self.status)
        if request.path.endswith("/sessions"):
            return web.json_response(
                {
                    "id": "sess_1",
                    "object": "realtime.session",
                    "model": "gpt-4o-realtime-preview",
                    "client_secret": {"value": f"{EPHEMERAL}{self.counter}", "expires_at": 2e9},
                }
            )
        return web.json_response(
            {
                "value": f"{EPHEMERAL}{self.counter}",
                "expires_at": int(time.time()) + 600,
                "session": {"type": "realtime", "object": "realtime.session", "id": "sess_1"},
            }
        )


def run_with_api(
    fn: Callable[[FakeApi, str], Awaitable[Any]], *, api: FakeApi | None = None
) -> Any:
    fake = api or FakeApi()

    async def main() -> Any:
        server = TestServer(fake.app(), host="127.0.0.1", port=0)
        await server.start_server()
        try:
            return await fn(fake, str(server.make_url("/v1")))
        finally:
            await server.close()

    return asyncio.run(main())


def test_resolve_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(errors.ConfigurationError, match="OPENAI_API_KEY"):
        auth.resolve_api_key()
    monkeypatch.setenv("OPENAI_API_KEY", STANDARD_KEY)
    assert auth.resolve_api_key().get_secret_value() == STANDARD_KEY
    assert auth.resolve_api_key("sk-other-1234").get_secret_value() == "sk-other-1234"


def test_resolve_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert auth.resolve_base_url() == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    assert auth.resolve_base_url() == "http://127.0.0.1:9/v1"
    assert auth.resolve_base_url("http://x/v1") == "http://x/v1"
    with pytest.raises(errors.ConfigurationError, match="http"):
        auth.resolve_base_url("ftp://x")


def test_ga_mint_request_and_key() -> None:
    async def go(api: FakeApi, base: str) -> auth.EphemeralKey:
        return await auth.create_client_secret(
            api_key=STANDARD_KEY, base_url=base, ttl_s=120, session={"model": "gpt-realtime"}
        )

    api = FakeApi()
    key = run_with_api(go, api=api)
    (req,) = api.requests
    assert req["path"] == "/v1/realtime/client_secrets"
    assert req["auth"] == f"Bearer {STANDARD_KEY}"
    assert req["json"] == {
        "expires_after": {"anchor": "created_at", "seconds": 120},
        "session": {"model": "gpt-realtime", "type": "realtime"},
    }
    assert key.value == f"{EPHEMERAL}1"
    assert key.api_version == "ga"
    assert key.session is not None
    assert key.session["id"] == "sess_1"
    assert 590 < key.seconds_left() <= 600
    assert not key.expired()


def test_beta_mint_request_and_key() -> None:
    async def go(api: FakeApi, base: str) -> auth.EphemeralKey:
        return await auth.create_client_secret(
            api_key=STANDARD_KEY,
            base_url=base,
            api_version="beta",
            session={"type": "realtime", "model": "m", "audio": {"output": {"voice": "verse"}}},
        )

    api = FakeApi()
    key = run_with_api(go, api=api)
    (req,) = api.requests
    assert req["path"] == "/v1/realtime/sessions"
    assert req["json"] == {"model": "m", "voice": "verse"}
    assert key.value == f"{EPHEMERAL}1"
    assert key.expires_at == 2e9
    assert key.api_version == "beta"
    assert key.session is not None
    assert "client_secret" not in key.session


@pytest.mark.parametrize("ttl", [0, 9, 7201, -5])
def test_ttl_out_of_range_rejected_locally(ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        auth.KeyMinter(STANDARD_KEY, "http://127.0.0.1:1/v1", ttl_s=ttl)


def test_minter_caches_and_remints_before_expiry() -> None:
    now = [time.time()]

    async def go(api: FakeApi, base: str) -> list[str]:
        async with auth.KeyMinter(STANDARD_KEY, base, margin_s=30, clock=lambda: now[0]) as minter:
            a = await minter.get()
            b = await minter.get()
            now[0] = a.expires_at - 31  # still 31 s left: reused
            c = await minter.get()
            now[0] = a.expires_at - 29  # inside the margin: re-minted
            d = await minter.get()
            assert minter.minted == 2
            return [a.value, b.value, c.value, d.value]

    values = run_with_api(go)
    assert values[:3] == [f"{EPHEMERAL}1"] * 3
    assert values[3] == f"{EPHEMERAL}2"


def test_concurrent_gets_share_one_mint() -> None:
    async def go(api: FakeApi, base: str) -> list[str]:
        async with auth.KeyMinter(STANDARD_KEY, base) as minter:
            keys = await asyncio.gather(*(minter.get() for _ in range(5)))
            assert minter.minted == 1
            return [k.value for k in keys]

    assert set(run_with_api(go)) == {f"{EPHEMERAL}1"}


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {STANDARD_KEY}. You can find ...",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
            errors.AuthenticationError,
            "invalid_api_key",
        ),
        (
            400,
            {"error": {"message": "bad ttl", "code": "invalid_value"}},
            errors.BadRequestError,
            "invalid_value",
        ),
        (429, {"error": {"message": "slow down"}}, errors.RateLimitError, None),
        (500, "upstream exploded", errors.InternalServerError, None),
        (503, "", errors.InternalServerError, None),
        (418, {"error": {"message": "teapot"}}, errors.APIStatusError, None),
    ],
)
def test_http_errors_mapped(status: int, body: Any, cls: type, code: str | None) -> None:
    api = FakeApi()
    api.status, api.body = status, body

    async def go(api: FakeApi, base: str) -> BaseException:
        with pytest.raises(errors.APIStatusError) as info:
            await auth.create_client_secret(api_key=STANDARD_KEY, base_url=base)
        return info.value

    exc = run_with_api(go, api=api)
    assert type(exc) is cls
    assert exc.status == status
    assert exc.code == code
    assert f"Error code: {status}" in str(exc)
    assert STANDARD_KEY not in str(exc)
    assert STANDARD_KEY not in repr(exc)


def test_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there

    async def go() -> None:
        await auth.create_client_secret(
            api_key=STANDARD_KEY, base_url=f"http://127.0.0.1:{port}/v1"
        )

    with pytest.raises(errors.ConnectionError) as info:
        asyncio.run(go())
    assert STANDARD_KEY not in str(info.value)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"value": 5}, "no key value"),
        ({"value": "ek_x", "expires_at": "soon"}, "expires_at"),
        ([1], "JSON object"),
    ],
)
def test_bad_payload_is_a_protocol_error(payload: Any, match: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(payload)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/realtime/client_secrets", handler)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        try:
            await auth.create_client_secret(
                api_key=STANDARD_KEY, base_url=str(server.make_url("/v1"))
            )
        finally:
            await server.close()

    with pytest.raises(errors.ProtocolError, match=match):
        asyncio.run(main())


def test_secrets_never_in_reprs_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = FakeApi()

    async def go(api: FakeApi, base: str) -> list[str]:
        texts: list[str] = []
        async with auth.KeyMinter(STANDARD_KEY, base) as minter:
            key = await minter.get()
            logging.getLogger("rtvoice.test").info("key %r minter %r", key, minter)
            texts += [repr(key), str(key), repr(minter), repr(minter.current), repr(key.secret)]
        api.status = 401
        api.body = {"error": {"message": f"Incorrect API key provided: {STANDARD_KEY}."}}
        try:
            await auth.create_client_secret(api_key=STANDARD_KEY, base_url=base)
        except errors.AuthenticationError as exc:
            logging.getLogger("rtvoice.test").exception("failed: %s", exc)
            texts += [str(exc), repr(exc), exc.message]
        return texts

    texts = run_with_api(go, api=api)
    assert len(texts) == 8
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "ek_***" in texts[0]  # redacted, but still says which kind of key
    for text in [*texts, logged, caplog.text]:
        assert STANDARD_KEY not in text
        assert EPHEMERAL not in text
    assert "Secret" in repr(auth.Secret(STANDARD_KEY))
    with pytest.raises(TypeError):
        pickle.dumps(auth.Secret(STANDARD_KEY))


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {STANDARD_KEY}",
        f"key={EPHEMERAL} more",
        "Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.ek_abcdef123456",
        "Bearer some.opaque-token_value",
    ],
)
def test_redact(text: str) -> None:
    out = errors.redact(text)
    assert STANDARD_KEY not in out
    assert EPHEMERAL not in out
    assert "abcdef123456" not in out
    assert "opaque-token_value" not in out
    assert "***" in out


def test_token_handler_mints_per_request_without_exposing_the_key() -> None:
    async def go(api: FakeApi, base: str) -> None:
        minter = auth.KeyMinter(STANDARD_KEY, base, session={"model": "gpt-realtime"})
        app = web.Application()
        auth.add_token_route(app, minter, "/api/token")
        backend = TestServer(app, host="127.0.0.1", port=0)
        await backend.start_server()
        try:
            async with aiohttp.ClientSession() as http:
                bodies = []
                for _ in range(2):
                    async with http.post(backend.make_url("/api/token")) as resp:
                        assert resp.status == 200
                        assert resp.headers["Cache-Control"] == "no-store"
                        text = await resp.text()
                        assert STANDARD_KEY not in text
                        bodies.append(json.loads(text))
                assert bodies[0]["value"] != bodies[1]["value"]
                assert bodies[0]["value"].startswith("ek_")
                assert isinstance(bodies[0]["expires_at"], int)
                assert bodies[0]["session"]["type"] == "realtime"
                api.status, api.body = (
                    401,
                    {"error": {"message": STANDARD_KEY, "code": "invalid_api_key"}},
                )
                async with http.post(backend.make_url("/api/token")) as resp:
                    assert resp.status == 502
                    text = await resp.text()
                    assert STANDARD_KEY not in text
                    err = json.loads(text)["error"]
                    assert err["code"] == "invalid_api_key"
                    assert err["upstream_status"] == 401
        finally:
            await backend.close()
            await minter.aclose()

    run_with_api(go)


async def _run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtvoice.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_token_cli_prints_a_key_and_fails_cleanly() -> None:
    async def go(api: FakeApi, base: str) -> None:
        code, out, err = await _run_cli(
            "token", "--api-key", STANDARD_KEY, "--base-url", base, "--ttl", "60", "--model", "m"
        )
        assert code == 0, err
        assert out.strip() == f"{EPHEMERAL}1"
        assert api.requests[0]["json"]["expires_after"]["seconds"] == 60
        assert api.requests[0]["json"]["session"] == {"model": "m", "type": "realtime"}
        code, out, _ = await _run_cli(
            "token", "--api-key", STANDARD_KEY, "--base-url", base, "--json"
        )
        assert code == 0
        assert json.loads(out)["value"] == f"{EPHEMERAL}2"
        api.status = 401
        api.body = {"error": {"message": f"Incorrect API key provided: {STANDARD_KEY}."}}
        code, out, err = await _run_cli("token", "--api-key", STANDARD_KEY, "--base-url", base)
        assert code == 1
        assert out == ""
        assert "Error code: 401" in err
        assert STANDARD_KEY not in err

    run_with_api(go)
