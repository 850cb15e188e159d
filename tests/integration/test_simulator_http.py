"""The simulator's HTTP endpoints (protocol.md §6 items 1, 2, 4): statuses, bodies, headers."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import openai
import pytest

from rtvoice.simulator import Simulator

MINIMAL_AUDIO_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
)
DATA_ONLY_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
)


def run(fn: Callable[[Simulator, aiohttp.ClientSession], Awaitable[Any]], **sim_kwargs: Any) -> Any:
    async def main() -> Any:
        async with Simulator(**sim_kwargs) as sim, aiohttp.ClientSession() as http:
            return await fn(sim, http)

    return asyncio.run(main())


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def offer_sdp() -> str:
    from .sim_client import BareClient

    client = BareClient()
    try:
        return await client.offer()
    finally:
        await client.close()


def test_base_url_and_key() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        assert sim.base_url == f"http://127.0.0.1:{sim.port}/v1"
        assert sim.port > 0
        assert sim.api_key.startswith("sk-sim-")

    run(go)


def test_client_secrets_ok_and_default_ttl() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        body = {"session": {"type": "realtime", "instructions": "Be brief."}}
        async with http.post(
            f"{sim.base_url}/realtime/client_secrets", json=body, headers=bearer(sim.api_key)
        ) as r:
            assert r.status == 200
            data = await r.json()
        assert data["value"].startswith("ek_")
        assert 595 <= data["expires_at"] - sim.now() <= 600
        session = data["session"]
        assert session["type"] == "realtime"
        assert session["object"] == "realtime.session"
        assert session["id"].startswith("sess_")
        assert session["instructions"] == "Be brief."
        async with http.post(
            f"{sim.base_url}/realtime/client_secrets",
            json={"expires_after": {"anchor": "created_at", "seconds": 10}},
            headers=bearer(sim.api_key),
        ) as r:
            assert r.status == 200
            assert 5 <= (await r.json())["expires_at"] - sim.now() <= 10

    run(go)


@pytest.mark.parametrize("seconds", [9, 7201, 0, "60"])
def test_client_secrets_ttl_out_of_range(seconds: Any) -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.post(
            f"{sim.base_url}/realtime/client_secrets",
            json={"expires_after": {"anchor": "created_at", "seconds": seconds}},
            headers=bearer(sim.api_key),
        ) as r:
            assert r.status == 400
            err = (await r.json())["error"]
        assert err["code"] == "invalid_value"
        assert err["param"] == "expires_after.seconds"
        assert err["type"] == "invalid_request_error"

    run(go)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"session": {"model": "m"}}, "session.type"),
        ({"session": {"type": "realtime", "modalities": ["audio"]}}, "session.modalities"),
        ({"expires_after": {"anchor": "now", "seconds": 60}}, "expires_after.anchor"),
        ({"extra": 1}, "extra"),
    ],
)
def test_client_secrets_bad_body(body: dict[str, Any], param: str) -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.post(
            f"{sim.base_url}/realtime/client_secrets", json=body, headers=bearer(sim.api_key)
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"]["param"] == param

    run(go)


def test_client_secrets_needs_the_standard_key() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        for headers in (bearer("sk-wrong-1234567"), {}, bearer(sim.mint_key())):
            async with http.post(
                f"{sim.base_url}/realtime/client_secrets", json={}, headers=headers
            ) as r:
                assert r.status == 401
                err = (await r.json())["error"]
                assert err["code"] == "invalid_api_key"
                assert "sk-wrong-1234567" not in err["message"]

    run(go)


def test_openai_sdk_reads_the_client_secret() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client = openai.AsyncOpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)
        try:
            secret = await client.realtime.client_secrets.create(
                expires_after={"anchor": "created_at", "seconds": 120},
                session={"type": "realtime", "model": "gpt-realtime"},
            )
            assert secret.value.startswith("ek_")
            assert secret.session.type == "realtime"
            with pytest.raises(openai.BadRequestError):
                await client.realtime.client_secrets.create(
                    expires_after={"anchor": "created_at", "seconds": 5}
                )
            bad = openai.AsyncOpenAI(api_key="sk-bad-123456", base_url=sim.base_url, max_retries=0)
            with pytest.raises(openai.AuthenticationError):
                await bad.realtime.client_secrets.create()
            await bad.close()
        finally:
            await client.close()

    run(go)


def test_calls_with_ephemeral_key_sdp() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        ek = sim.mint_key(ttl_s=60)
        async with http.post(
            f"{sim.base_url}/realtime/calls",
            data=await offer_sdp(),
            headers={**bearer(ek), "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 201
            assert r.headers["Content-Type"] == "application/sdp"
            location = r.headers["Location"]
            answer = await r.text()
        assert location.startswith("/v1/realtime/calls/rtc_")
        call_id = location.rsplit("/", 1)[-1]
        assert call_id in sim.calls
        assert answer.startswith("v=0")
        assert "m=audio" in answer
        assert "a=max-message-size:" in answer
        assert sim.requests[-1].status == 201
        assert ek not in sim.requests[-1].authorization

    run(go)


def test_calls_multipart_with_standard_key_applies_the_session() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        form = aiohttp.FormData()
        form.add_field("sdp", await offer_sdp(), content_type="application/sdp")
        form.add_field(
            "session",
            json.dumps({"type": "realtime", "instructions": "multipart!"}),
            content_type="application/json",
        )
        async with http.post(
            f"{sim.base_url}/realtime/calls", data=form, headers=bearer(sim.api_key)
        ) as r:
            assert r.status == 201
            call_id = r.headers["Location"].rsplit("/", 1)[-1]
        assert sim.calls[call_id].session["instructions"] == "multipart!"

    run(go)


def test_offer_pt_reused_in_answer() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        offer = await offer_sdp()
        offer_pt = next(
            line.split(":")[1].split()[0]
            for line in offer.splitlines()
            if "opus/48000" in line and line.startswith("a=rtpmap:")
        )
        async with http.post(
            f"{sim.base_url}/realtime/calls",
            data=offer,
            headers={**bearer(sim.api_key), "Content-Type": "application/sdp"},
        ) as r:
            answer = await r.text()
        assert f"a=rtpmap:{offer_pt} opus/48000/2" in answer

    run(go)


@pytest.mark.parametrize(
    ("offer", "message"),
    [
        (DATA_ONLY_OFFER, "Offer did not have an audio media section."),
        ("hello", "WHIP-compliant"),
        (MINIMAL_AUDIO_OFFER, "Invalid SDP offer"),
    ],
)
def test_calls_invalid_offer(offer: str, message: str) -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.post(
            f"{sim.base_url}/realtime/calls",
            data=offer,
            headers={**bearer(sim.api_key), "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 400
            assert r.content_type == "application/json"
            err = (await r.json())["error"]
        assert err["code"] == "invalid_offer"
        assert err["type"] == "invalid_request_error"
        assert message in err["message"]
        assert sim.calls == {}

    run(go)


def test_offer_without_loopback_candidates_is_refused_clearly() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        offer = (await offer_sdp()).replace("127.0.0.1", "192.0.2.77")
        async with http.post(
            f"{sim.base_url}/realtime/calls",
            data=offer,
            headers={**bearer(sim.api_key), "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 400
            err = (await r.json())["error"]
        assert err["code"] == "invalid_offer"
        assert "loopback" in err["message"]

    run(go)


def test_calls_unknown_and_expired_keys() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        offer = await offer_sdp()
        fresh = sim.mint_key(ttl_s=60)
        for key in ("ek_unknown0000", "sk-nope-12345678"):
            async with http.post(
                f"{sim.base_url}/realtime/calls",
                data=offer,
                headers={**bearer(key), "Content-Type": "application/sdp"},
            ) as r:
                assert r.status == 401
                assert (await r.json())["error"]["code"] == "invalid_api_key"
        sim.advance_time(61)
        async with http.post(
            f"{sim.base_url}/realtime/calls",
            data=offer,
            headers={**bearer(fresh), "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 401
        other = sim.mint_key(ttl_s=600)
        sim.expire_keys()
        async with http.post(
            f"{sim.base_url}/realtime/calls",
            data=offer,
            headers={**bearer(other), "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 401

    run(go)


def test_calls_model_query_rejected_with_empty_body() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.post(
            f"{sim.base_url}/realtime/calls?model=gpt-realtime",
            data=await offer_sdp(),
            headers={**bearer(sim.api_key), "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 400
            assert await r.read() == b""

    run(go)


def test_calls_wrong_content_type_and_missing_sdp_part() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.post(
            f"{sim.base_url}/realtime/calls", json={"sdp": "x"}, headers=bearer(sim.api_key)
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == "unsupported_content_type"
        form = aiohttp.FormData()
        form.add_field("session", "{}", content_type="application/json")
        async with http.post(
            f"{sim.base_url}/realtime/calls", data=form, headers=bearer(sim.api_key)
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"]["param"] == "sdp"

    run(go)


def test_hangup() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.post(
            f"{sim.base_url}/realtime/calls",
            data=await offer_sdp(),
            headers={**bearer(sim.api_key), "Content-Type": "application/sdp"},
        ) as r:
            location = r.headers["Location"]
        call = sim.calls[location.rsplit("/", 1)[-1]]
        async with http.post(f"http://127.0.0.1:{sim.port}{location}/hangup") as r:
            assert r.status == 401
        async with http.post(
            f"http://127.0.0.1:{sim.port}{location}/hangup", headers=bearer(sim.api_key)
        ) as r:
            assert r.status == 200
        assert call.hung_up
        assert call.closed
        async with http.post(
            f"{sim.base_url}/realtime/calls/rtc_nope/hangup", headers=bearer(sim.api_key)
        ) as r:
            assert r.status == 404

    run(go)


def test_beta_endpoints_behind_the_switch() -> None:
    async def off(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.post(
            f"{sim.base_url}/realtime/sessions", json={}, headers=bearer(sim.api_key)
        ) as r:
            assert r.status == 404
        async with http.post(
            f"{sim.base_url}/realtime?model=gpt-4o-realtime-preview",
            data=await offer_sdp(),
            headers={**bearer(sim.api_key), "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == "beta_api_shape_disabled"

    async def on(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.post(
            f"{sim.base_url}/realtime/sessions",
            json={
                "model": "gpt-4o-realtime-preview",
                "voice": "verse",
                "modalities": ["text", "audio"],
            },
            headers=bearer(sim.api_key),
        ) as r:
            assert r.status == 200
            data = await r.json()
        ek = data["client_secret"]["value"]
        assert ek.startswith("ek_")
        assert 55 <= data["client_secret"]["expires_at"] - sim.now() <= 60
        assert data["voice"] == "verse"
        assert data["object"] == "realtime.session"
        async with http.post(
            f"{sim.base_url}/realtime/sessions",
            json={"output_modalities": ["audio"]},
            headers=bearer(sim.api_key),
        ) as r:
            assert r.status == 400
        async with http.post(
            f"{sim.base_url}/realtime?model=gpt-4o-realtime-preview",
            data=await offer_sdp(),
            headers={**bearer(ek), "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 201
            assert "Location" not in r.headers
            assert (await r.text()).startswith("v=0")
        assert sim.last_call is not None
        assert sim.last_call.beta
        async with http.post(
            f"{sim.base_url}/realtime",
            data=await offer_sdp(),
            headers={**bearer(ek), "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"]["param"] == "model"

    run(off)
    run(on, beta=True)


def test_http_fault_injection() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.faults.fail_next("/realtime/client_secrets", 503, times=2)
        sim.faults.fail_next("/realtime/calls", 500, {"error": {"message": "boom"}})
        for _ in range(2):
            async with http.post(
                f"{sim.base_url}/realtime/client_secrets", json={}, headers=bearer(sim.api_key)
            ) as r:
                assert r.status == 503
        async with http.post(
            f"{sim.base_url}/realtime/client_secrets", json={}, headers=bearer(sim.api_key)
        ) as r:
            assert r.status == 200
        offer = await offer_sdp()
        async with http.post(
            f"{sim.base_url}/realtime/calls",
            data=offer,
            headers={**bearer(sim.api_key), "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 500
            assert (await r.json())["error"]["message"] == "boom"
        sim.faults.bad_answer = True
        async with http.post(
            f"{sim.base_url}/realtime/calls",
            data=offer,
            headers={**bearer(sim.api_key), "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 201
            assert not (await r.text()).startswith("v=0")
        assert [x.status for x in sim.requests] == [503, 503, 200, 500, 201]

    run(go)


def test_rtvoice_auth_against_the_simulator() -> None:
    from rtvoice import auth, errors

    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        key = await auth.create_client_secret(api_key=sim.api_key, base_url=sim.base_url, ttl_s=30)
        assert key.value in sim._keys
        beta = await auth.create_client_secret(
            api_key=sim.api_key, base_url=sim.base_url, api_version="beta"
        )
        assert beta.api_version == "beta"
        with pytest.raises(errors.BadRequestError) as info:
            await auth.create_client_secret(
                api_key=sim.api_key, base_url=sim.base_url, session={"type": "bogus"}
            )
        assert info.value.param == "session.type"

    run(go, beta=True)


def test_serve_sim_cli() -> None:
    async def main() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rtvoice.cli",
            "serve-sim",
            "--seconds",
            "20",
            "--api-key",
            "sk-sim-cli-test-0001",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            base_url = line.strip().split("base_url=")[1]
            assert base_url.startswith("http://127.0.0.1:")
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{base_url}/realtime/client_secrets",
                    json={},
                    headers=bearer("sk-sim-cli-test-0001"),
                ) as r,
            ):
                assert r.status == 200
                assert (await r.json())["value"].startswith("ek_")
        finally:
            proc.terminate()
            await proc.wait()

    asyncio.run(main())
