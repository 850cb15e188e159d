"""The native media path (RTP, RTCP and SRTP on the C++ media thread) against the simulator, its
fallback to aiortc's RTP path, and the process's media thread coming and going with its calls."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

import rtvoice
from rtvoice import _core, errors
from rtvoice.rtc import native_audio
from rtvoice.simulator import Simulator
from rtvoice.transports import webrtc

from .test_simulator_e2e import _clip_48k, _segment_similarity, _talk_once


def _engine_idle() -> bool:
    stats = _core.media_engine_stats()
    return bool(stats["calls"] == 0 and not stats["running"])


@pytest.mark.parametrize("media_path", ["native", "python"])
def test_both_media_paths_carry_the_audio_intact(media_path: str) -> None:
    async def main() -> dict[str, Any]:
        async with Simulator() as sim:
            out = await _talk_once(sim, transport="webrtc", media_path=media_path)
            ref, _ = _clip_48k()
            received = out["call"].received_pcm().astype(np.float32) / 32768.0
            sent = np.concatenate(list(out["call"].played.values())).astype(np.float32) / 32768.0
            out["r_up"] = _segment_similarity(received, ref)
            out["r_down"] = _segment_similarity(out["played"], sent)
        return out

    out = asyncio.run(main())
    print(f"{media_path}: similarity uplink {out['r_up']:.3f}, downlink {out['r_down']:.3f}")
    assert out["r_up"] > 0.8
    assert out["r_down"] > 0.8
    m = out["metrics"]
    assert m.media_path == media_path
    assert m.media_errors == 0
    assert m.rtt_ms is not None
    assert m.packets_received > 50
    if media_path == "native":
        assert m.media_path_reason is None
        media = m.media
        # SRTP both ways with the simulator's libsrtp (pylibsrtp): nothing failed to
        # authenticate, RTCP went both ways, and the data channel's DTLS went through the
        # hand-off to aioice.
        for counter in (
            "srtp_errors",
            "srtcp_errors",
            "malformed",
            "handoff_errors",
            "to_python_dropped",
            "downlink_refused",
            "downlink_contention",
            "uplink_contention",
        ):
            assert media[counter] == 0, counter
        assert media["rtcp_sent"] >= 1
        assert media["rtcp_received"] >= 1
        assert media["reports_received"] >= 1
        assert media["handed_off"] > 0
        assert media["packets_sent"] == m.packets_sent > 100
        # The simulator got every packet of the call's stream: no loss on loopback.
        assert len(out["call"].received_packets) >= media["packets_sent"] - 5
    else:
        assert m.media_path_reason == "media_path='python'"
        assert m.media == {}
    assert _engine_idle()


def _no_native_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """As with a libsrtp2 that has none of the profiles aiortc offers."""
    monkeypatch.setattr(native_audio, "native_srtp_profiles", lambda: [])


def _internal_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    """As with an aiortc whose DTLS transport lost an attribute the native path reads."""

    def moved(dtls: Any) -> tuple[str, bytes, bytes]:
        raise AttributeError("'RTCDtlsTransport' object has no attribute '_ssl'")

    monkeypatch.setattr(native_audio, "_srtp_keys", moved)


@pytest.mark.parametrize(
    ("break_it", "reason"),
    [
        (_no_native_profiles, "supports none of aiortc's SRTP profiles"),
        (_internal_moved, "AttributeError: 'RTCDtlsTransport' object has no attribute '_ssl'"),
    ],
    ids=["no-srtp-profile", "aiortc-internal-moved"],
)
def test_a_call_the_native_path_cannot_carry_falls_back_to_aiortc(
    monkeypatch: pytest.MonkeyPatch, break_it: Any, reason: str
) -> None:
    break_it(monkeypatch)

    async def main() -> dict[str, Any]:
        async with Simulator() as sim:
            out = await _talk_once(sim, transport="webrtc")
            sent = np.concatenate(list(out["call"].played.values())).astype(np.float32) / 32768.0
            out["r_down"] = _segment_similarity(out["played"], sent)
        return out

    out = asyncio.run(main())
    m = out["metrics"]
    assert m.media_path == "python"
    assert m.media_path_reason is not None
    assert reason in m.media_path_reason
    assert m.media == {}
    # The call works all the same, on aiortc's path.
    assert out["r_down"] > 0.8
    assert m.rtt_ms is not None
    assert _engine_idle()


def test_media_path_native_fails_the_call_instead_of_falling_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _internal_moved(monkeypatch)

    async def main() -> None:
        async with Simulator() as sim:
            session = rtvoice.connect(
                base_url=sim.base_url,
                api_key=sim.api_key,
                transport="webrtc",
                media_path="native",
                reconnect=False,
            )
            with pytest.raises(errors.RtvoiceError, match="native media path is unavailable"):
                await session.open()
            await session.close()

    asyncio.run(main())
    assert _engine_idle()


def test_media_path_is_checked() -> None:
    with pytest.raises(ValueError, match="media_path"):
        rtvoice.connect(media_path="c++")
    with pytest.raises(ValueError, match="media_path"):
        webrtc.WebRTCTransport(base_url="http://127.0.0.1:1/v1", media_path="fast")  # type: ignore[arg-type]


def test_the_media_threads_serve_many_calls_and_stop_with_the_last() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            sessions = [
                rtvoice.connect(base_url=sim.base_url, api_key=sim.api_key, transport="webrtc")
                for _ in range(4)
            ]
            await asyncio.gather(*(s.open() for s in sessions))
            try:
                stats = _core.media_engine_stats()
                assert stats["calls"] == 4
                assert stats["running"]
                # A fixed pool shares the calls out: never a thread per call.
                assert 1 <= stats["threads"] <= stats["max_threads"] <= 4
                started = stats["threads_started"]
                tone = (0.2 * np.sin(np.arange(48000) * 2 * np.pi * 300 / 48000)).astype(np.float32)
                for s in sessions:
                    s.push_audio(tone, sample_rate=48000)
                await asyncio.sleep(1.5)
                for s in sessions:
                    m = await s.refresh_metrics()
                    assert m.media_path == "native"
                    assert m.media["packets_sent"] >= 50
                    assert m.media["srtp_errors"] == 0
                # One call leaving does not stop the threads the others use.
                await sessions[0].close()
                stats = _core.media_engine_stats()
                assert stats["calls"] == 3
                assert stats["running"]
                assert stats["threads_started"] == started
                before = [(await s.refresh_metrics()).media["packets_sent"] for s in sessions[1:]]
                await asyncio.sleep(0.5)
                after = [(await s.refresh_metrics()).media["packets_sent"] for s in sessions[1:]]
                assert all(a > b for a, b in zip(after, before, strict=True))
            finally:
                for s in sessions:
                    await s.close()
            assert _engine_idle()

    asyncio.run(main())


def test_the_peers_receiver_reports_drive_rtt_and_the_encoders_loss_hint() -> None:
    # 20 % of the client's RTP is lost on the way to the server: the server's receiver reports
    # (aiortc's RTCP) say so, the native path reads them, and the session turns them into the
    # Opus encoder's loss hint, applied on the media thread.
    async def main() -> None:
        async with (
            Simulator(uplink_loss=0.2, seed=5) as sim,
            rtvoice.connect(
                base_url=sim.base_url, api_key=sim.api_key, transport="webrtc"
            ) as session,
        ):
            call = await sim.wait_for_call()
            fractions: dict[int, float] = {}
            hints: set[int] = set()
            m = session.metrics
            for _ in range(150):
                await asyncio.sleep(0.1)
                m = await session.refresh_metrics()
                if m.media.get("reports_received", 0):
                    fractions[m.media["reports_received"]] = m.media["remote_fraction_lost"]
                    hints.add(m.media["loss_hint_applied"])
                if len(fractions) >= 6:
                    break
            assert m.media_path == "native"
            assert len(fractions) >= 6, fractions
            # Each report covers about a second (~50 packets): the mean over them is near
            # the 20 % dropped, and the cumulative count never exceeds what was dropped.
            mean = sum(fractions.values()) / len(fractions)
            assert 0.1 < mean < 0.35, fractions
            assert 0 < m.media["remote_packets_lost"] <= call.inbound.dropped
            assert m.rtt_ms is not None
            assert 0 <= m.rtt_ms < 200
            # The hint follows the reports (the session's floor is 5 %).
            assert max(hints) > 10, hints

    asyncio.run(main())
