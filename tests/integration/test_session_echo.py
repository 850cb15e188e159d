from __future__ import annotations

import asyncio

import numpy as np

import rtvoice

from .answerer import MiniAnswerer


def _speechlike(rate_hz: int, seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    f0 = 140 + 40 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate_hz
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6))
    return (0.3 * voiced * envelope / 2).astype(np.float32)


def _segment_correlations(played: np.ndarray, ref: np.ndarray, pieces: int) -> list[float]:
    """Best normalized correlation of each of `pieces` parts of the reference anywhere in the
    played audio. The adaptive jitter buffer stretches the playout by pitch periods while it
    settles (and after a hold), which shifts the alignment inside the clip, so the clip is
    matched part by part."""
    n = 1 << int(np.ceil(np.log2(played.size + ref.size)))
    spectrum = np.fft.rfft(played, n)
    energy = np.concatenate(([0.0], np.cumsum(played.astype(np.float64) ** 2)))
    size = ref.size // pieces
    out = []
    for i in range(pieces):
        piece = ref[i * size : (i + 1) * size]
        corr = np.fft.irfft(spectrum * np.conj(np.fft.rfft(piece, n)), n)[: played.size - size]
        window = np.sqrt(energy[size : played.size] - energy[: played.size - size])
        out.append(float((corr / (window * np.linalg.norm(piece) + 1e-9)).max()))
    return out


def test_audio_round_trip_through_an_echo_peer_arrives_intact() -> None:
    async def main() -> None:
        answerer = MiniAnswerer(echo=True)
        base_url = await answerer.start()
        states: list[str] = []
        async with rtvoice.connect(
            base_url=base_url, api_key="ek_test_key_1234", record_output=True
        ) as session:
            session.on_state_change(lambda old, new: states.append(new))
            clip = _speechlike(16000, 1.5)
            await session.send_audio(clip, 16000)
            await asyncio.sleep(2.3)
            played = session.read_audio()
            metrics = await session.refresh_metrics()
        assert session.state == "closed"
        assert states[-1] == "closed"
        ref = _speechlike(48000, 1.5)
        # Correlate the played audio against the clip (both 48 kHz): the echo must contain it.
        corr = np.correlate(played, ref, mode="valid")
        lag = int(np.argmax(corr))
        segment = played[lag : lag + ref.size]
        r = float(np.dot(segment, ref) / (np.linalg.norm(segment) * np.linalg.norm(ref) + 1e-12))
        print(
            f"echo correlation {r:.3f} at lag {lag / 48:.1f} ms",
            metrics.jitter_buffer,
            metrics.uplink,
        )
        parts = _segment_correlations(played, ref, 6)
        print("part correlations", [round(x, 3) for x in parts])
        assert sorted(parts)[2] > 0.8, (r, lag, parts)  # at least 4 of 6 parts come through
        assert metrics.packets_sent > 50
        assert metrics.packets_received > 50
        assert metrics.jitter_buffer["packets_received"] >= 75
        await answerer.stop()

    asyncio.run(main())
