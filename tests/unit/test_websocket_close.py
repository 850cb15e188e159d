"""WebSocketTransport reports the server's close code and close reason (the reason travels in the
close frame, which the transport's reader must not drop)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from rtvoice.transports.websocket import WebSocketTransport


async def _serve_then_close(code: int, message: bytes) -> WebSocketTransport:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"session.created","session":{}}')
        await asyncio.sleep(0.05)
        await ws.close(code=code, message=message)
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    states: list[tuple[str, str | None]] = []
    transport = WebSocketTransport(
        base_url=f"http://127.0.0.1:{port}/v1",
        model="m",
        on_state=lambda state, reason: states.append((state, reason)),
    )
    try:
        await transport.connect(key="sk-test")
        for _ in range(200):
            if transport.state == "failed":
                break
            await asyncio.sleep(0.01)
    finally:
        await transport.close()
        await runner.cleanup()
    assert ("failed", transport.reason) in states
    return transport


def test_close_code_and_reason_are_reported() -> None:
    transport = asyncio.run(_serve_then_close(4001, b"quota exceeded"))
    assert transport.state == "failed"
    assert transport.close_code == 4001
    assert transport.close_reason == "quota exceeded"
    assert transport.reason == "the server closed the WebSocket (code 4001, quota exceeded)"


def test_close_without_reason() -> None:
    transport = asyncio.run(_serve_then_close(int(aiohttp.WSCloseCode.GOING_AWAY), b""))
    assert transport.close_code == 1001
    assert transport.close_reason is None
    assert transport.reason == "the server closed the WebSocket (code 1001)"
