"""Opus encoder/decoder of the native core (rtvoice.OpusEncoder / OpusDecoder / OpusError)."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import numpy.typing as npt
import pytest
from audio_fixtures import speech

import rtvoice
from rtvoice import OpusDecoder, OpusEncoder, OpusError

RATES_HZ = (8000, 12000, 16000, 24000, 48000)
OPUS_INVALID_PACKET = -4

FloatArray = npt.NDArray[np.float32]


def frames_of(x: npt.NDArray[np.generic], frame_samples: int) -> list[npt.NDArray[np.generic]]:
    return [
        x[i : i + frame_samples] for i in range(0, x.shape[0] - frame_samples + 1, frame_samples)
    ]


def snr_db(ref: npt.NDArray[np.floating], test: npt.NDArray[np.floating]) -> float:
    ref64 = ref.astype(np.float64)
    err = np.sum((test.astype(np.float64) - ref64) ** 2)
    return float(10 * np.log10(np.sum(ref64**2) / max(err, 1e-30)))


def best_aligned_snr(x: FloatArray, y: FloatArray, lookahead: int, skip: int) -> tuple[float, int]:
    """Best SNR of output y against input x over lags within 0.5 ms of the encoder lookahead.

    SILK's internal resamplers shift the output by a few samples against the nominal lookahead,
    so the best lag near it is taken; the lag is returned so the caller can bound it.
    """
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    best = (-np.inf, 0)
    for lag in range(max(0, lookahead - 24), lookahead + 25):
        n = min(x64.shape[0], y64.shape[0] - lag) - skip
        ref, out = x64[skip : skip + n], y64[skip + lag : skip + lag + n]
        best = max(best, (float(10 * np.log10(np.sum(ref**2) / np.sum((out - ref) ** 2))), lag))
    return best


def encode_all(enc: OpusEncoder, x: npt.NDArray[np.generic], frame_samples: int) -> list[bytes]:
    return [enc.encode(f) for f in frames_of(x, frame_samples)]


# ---------------------------------------------------------------------------------------------
# Round trips


def test_speech_round_trip_48k(speech_48k: FloatArray) -> None:
    enc, dec = OpusEncoder(), OpusDecoder()
    packets = encode_all(enc, speech_48k, 960)
    y = np.concatenate([dec.decode(p) for p in packets])
    assert y.dtype == np.float32
    assert y.shape == (len(packets) * 960,)
    assert enc.lookahead == 312  # 6.5 ms: 2.5 ms + 4 ms delay compensation at 48 kHz (VOIP)
    snr, lag = best_aligned_snr(speech_48k, y, enc.lookahead, skip=4800)
    assert abs(lag - enc.lookahead) <= 12
    assert snr >= 8.0, snr  # waveform SNR; 32 kb/s hybrid mode is not waveform-matching above 8 kHz
    n = y.shape[0] - lag - 4800
    corr = np.corrcoef(speech_48k[4800 : 4800 + n], y[4800 + lag : 4800 + lag + n])[0, 1]
    assert corr >= 0.93, corr


def test_encoder_and_decoder_agree_on_range_coder_state(speech_48k: FloatArray) -> None:
    enc, dec = OpusEncoder(), OpusDecoder()
    for frame in frames_of(speech_48k[:48000], 960):
        dec.decode(enc.encode(frame))
        assert dec.final_range == enc.final_range


@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip_every_rate_and_layout(rate_hz: int, channels: int) -> None:
    x = speech(rate_hz)[: rate_hz * 2]
    if channels == 2:  # distinct channels: the right one delayed and quieter
        x = np.ascontiguousarray(np.stack([x, 0.5 * np.roll(x, 17)], axis=1))
    enc = OpusEncoder(sample_rate=rate_hz, channels=channels, bitrate=48000)
    dec = OpusDecoder(sample_rate=rate_hz, channels=channels)
    n = rate_hz // 50
    packets = encode_all(enc, x, n)
    y = np.concatenate([dec.decode(p) for p in packets])
    assert y.shape == ((len(packets) * n,) if channels == 1 else (len(packets) * n, channels))
    lag = enc.lookahead
    best = max(
        np.corrcoef(
            x[n : -2 * n, c] if channels == 2 else x[n : -2 * n],
            (y[n + d : d - 2 * n, c] if channels == 2 else y[n + d : d - 2 * n]),
        )[0, 1]
        for c in range(channels)
        for d in range(lag - rate_hz // 1000, lag + rate_hz // 1000 + 1)
    )
    assert best >= 0.9


@pytest.mark.parametrize("ms", [10, 20, 40, 60])
def test_frame_durations(ms: int, speech_48k: FloatArray) -> None:
    n = 48 * ms
    enc, dec = OpusEncoder(), OpusDecoder()
    for frame in frames_of(speech_48k[: 48000 // 2], n):
        p = enc.encode(frame)
        assert OpusDecoder.packet_samples(p) == n
        assert OpusDecoder.packet_samples(p, sample_rate=16000) == 16 * ms
        assert dec.decode(p).shape == (n,)
        assert dec.last_packet_duration == n


def test_int16_and_float32_input_are_the_same_signal() -> None:
    # libopus scales int16 input by 1/32768: SILK-only (16 kHz) packets are byte-identical. At
    # 48 kHz the bandwidth detector runs on differently scaled analysis data and sometimes picks
    # another bandwidth, so there the decoded audio is compared.
    for rate_hz, n in ((16000, 320), (48000, 960)):
        x16 = speech(rate_hz, np.int16)[: rate_hz * 2]
        x32 = x16.astype(np.float32) / np.float32(32768)
        p16 = encode_all(OpusEncoder(sample_rate=rate_hz), x16, n)
        p32 = encode_all(OpusEncoder(sample_rate=rate_hz), x32, n)
        if rate_hz == 16000:
            assert p16 == p32
        else:
            d16, d32 = OpusDecoder(), OpusDecoder()
            y16 = np.concatenate([d16.decode(p) for p in p16])
            y32 = np.concatenate([d32.decode(p) for p in p32])
            assert snr_db(y32, y16) >= 12.0


def test_int16_output_matches_float_output(speech_48k: FloatArray) -> None:
    packets = encode_all(OpusEncoder(), speech_48k[:48000], 960)
    df, di = OpusDecoder(), OpusDecoder()
    for p in packets:
        yf, yi = df.decode(p), di.decode(p, dtype=np.int16)
        assert yi.dtype == np.int16
        assert np.max(np.abs(np.clip(yf * 32768, -32768, 32767) - yi)) <= 1.0


def test_reset_restarts_the_stream(speech_48k: FloatArray) -> None:
    x = speech_48k[:24000]
    enc = OpusEncoder()
    first = encode_all(enc, x, 960)
    second = encode_all(enc, x, 960)
    assert first != second  # the coding history differs
    enc.reset()
    assert encode_all(enc, x, 960) == first
    dec = OpusDecoder()
    a = [dec.decode(p) for p in first]
    dec.reset()
    b = [dec.decode(p) for p in first]
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=False))


def test_read_only_input_is_accepted(speech_48k: FloatArray) -> None:
    assert not speech_48k.flags.writeable
    assert len(OpusEncoder().encode(speech_48k[:960])) > 0


# ---------------------------------------------------------------------------------------------
# Settings


def test_constructor_settings_are_reported() -> None:
    enc = OpusEncoder(
        sample_rate=24000,
        channels=2,
        application="audio",
        bitrate=64000,
        complexity=5,
        fec=False,
        packet_loss_perc=3,
        dtx=True,
    )
    assert (enc.sample_rate, enc.channels, enc.application) == (24000, 2, "audio")
    assert (enc.bitrate, enc.complexity, enc.fec, enc.packet_loss_perc, enc.dtx) == (
        64000,
        5,
        False,
        3,
        True,
    )
    assert "bitrate=64000" in repr(enc)
    dec = OpusDecoder(sample_rate=16000, channels=2)
    assert (dec.sample_rate, dec.channels) == (16000, 2)


def test_bitrate_changes_packet_sizes(speech_48k: FloatArray) -> None:
    frames = frames_of(speech_48k[: 48000 * 3], 960)
    enc = OpusEncoder(bitrate=12000)
    low = [len(enc.encode(f)) for f in frames]
    enc.bitrate = 64000
    high = [len(enc.encode(f)) for f in frames]
    enc.set_bitrate(24000)
    mid = [len(enc.encode(f)) for f in frames]
    assert enc.bitrate == 24000
    # Mean packet size tracks the target: bytes = bps * 0.02 / 8 (VBR, so within +-30 %).
    for sizes, bps in ((low, 12000), (high, 64000), (mid, 24000)):
        assert abs(np.mean(sizes) / (bps * 0.02 / 8) - 1) < 0.3, (bps, np.mean(sizes))


def test_dtx_sends_tiny_packets_on_silence() -> None:
    silence = np.zeros(960, np.float32)
    enc = OpusEncoder(dtx=False)
    sizes_off = [len(enc.encode(silence)) for _ in range(60)]
    enc.dtx = True
    assert enc.dtx
    sizes_on = [len(enc.encode(silence)) for _ in range(60)]
    assert min(sizes_off) > 2
    # After 200 ms of silence the encoder stops sending audio: ≤ 2-byte packets, except a
    # comfort-noise refresh about every 400 ms.
    tail = sizes_on[10:]
    assert sum(s <= 2 for s in tail) >= 0.9 * len(tail)
    assert enc.in_dtx
    dec = OpusDecoder()
    out = [dec.decode(enc.encode(silence)) for _ in range(5)]
    assert all(o.shape == (960,) and np.max(np.abs(o)) < 1e-3 for o in out)


def test_fec_setting_controls_lbrr(speech_48k: FloatArray) -> None:
    frames = frames_of(speech_48k[: 48000 * 3], 960)
    enc = OpusEncoder(fec=False)
    off = [OpusDecoder.packet_has_fec(enc.encode(f)) for f in frames]
    enc.set_fec(True)
    on = [OpusDecoder.packet_has_fec(enc.encode(f)) for f in frames]
    enc.packet_loss_perc = 0  # libopus codes FEC only when it expects loss
    no_loss = [OpusDecoder.packet_has_fec(enc.encode(f)) for f in frames]
    # LBRR of a frame travels in the next packet: the first one after the switch still has it.
    assert not any(off)
    assert not any(no_loss[1:])
    assert np.mean(on) >= 0.7  # speech frames; silence carries no LBRR


def test_complexity_setting() -> None:
    enc = OpusEncoder()
    enc.complexity = 0
    assert enc.complexity == 0
    enc.set_complexity(10)
    assert enc.complexity == 10
    x = speech(48000)[:48000]
    low = encode_all(OpusEncoder(complexity=0), x, 960)
    high = encode_all(OpusEncoder(complexity=10), x, 960)
    assert low != high


def test_restricted_lowdelay_never_codes_fec(speech_48k: FloatArray) -> None:
    enc = OpusEncoder(application="restricted_lowdelay")
    packets = encode_all(enc, speech_48k[:48000], 960)
    assert all(p[0] >> 3 >= 16 for p in packets)  # CELT-only TOC configs
    assert not any(OpusDecoder.packet_has_fec(p) for p in packets)


# ---------------------------------------------------------------------------------------------
# packet_has_fec: the TOC + SILK header parser


def silk_packet(config: int, stereo: bool, first_byte: int) -> bytes:
    """A code-0 packet whose single frame starts with first_byte, then filler."""
    return bytes([(config << 3) | (4 if stereo else 0), first_byte, 0x55, 0xAA, 0x12])


@pytest.mark.parametrize(
    ("config", "silk_frames"),
    [(1, 1), (0, 1), (2, 2), (3, 3), (9, 1), (11, 3), (13, 1), (14, 1)],
)
def test_packet_has_fec_reads_the_lbrr_bits(config: int, silk_frames: int) -> None:
    # RFC 6716 §4.2.3: per channel, one VAD flag per SILK frame, then the LBRR flag.
    mid_lbrr = 0x80 >> silk_frames
    side_lbrr = 0x80 >> (2 * silk_frames + 1)
    vad_bits = (0xFF << (8 - silk_frames)) & 0xFF
    assert OpusDecoder.packet_has_fec(silk_packet(config, False, mid_lbrr))
    assert not OpusDecoder.packet_has_fec(silk_packet(config, False, vad_bits))
    assert not OpusDecoder.packet_has_fec(silk_packet(config, False, 0xFF & ~mid_lbrr))
    assert OpusDecoder.packet_has_fec(silk_packet(config, True, side_lbrr))
    assert OpusDecoder.packet_has_fec(silk_packet(config, True, mid_lbrr))
    assert not OpusDecoder.packet_has_fec(silk_packet(config, True, 0xFF & ~mid_lbrr & ~side_lbrr))
    # In mono the side-channel bit is part of the range-coded data, not a flag.
    assert not OpusDecoder.packet_has_fec(silk_packet(config, False, side_lbrr))


def test_packet_has_fec_is_false_for_celt_dtx_and_malformed() -> None:
    for config in range(16, 32):
        assert not OpusDecoder.packet_has_fec(bytes([config << 3, 0xFF, 0xFF, 0xFF]))
    assert not OpusDecoder.packet_has_fec(bytes([1 << 3]))  # DTX: TOC only
    assert not OpusDecoder.packet_has_fec(bytes([(1 << 3) | 1, 0xFF, 0xFF, 0xFF]))  # code 1, odd
    assert not OpusDecoder.packet_has_fec(bytes([(1 << 3) | 3, 0]))  # code 3 with 0 frames
    assert OpusDecoder.packet_has_fec(bytes([(1 << 3) | 1, 0x40, 0x00]))  # code 1, two frames


@pytest.mark.parametrize(
    ("rate_hz", "channels", "ms"), [(48000, 1, 20), (16000, 1, 40), (16000, 2, 60), (48000, 2, 20)]
)
def test_packet_has_fec_predicts_decode_fec(rate_hz: int, channels: int, ms: int) -> None:
    """Where packet_has_fec says LBRR is present, decode_fec must differ from concealment.

    Two decoders are brought to the same state (reset, then the same three packets); one
    decodes the next-but-one packet's FEC data, the other conceals. Without LBRR libopus
    conceals too, and for mono SILK-only packets in the mode and bandwidth already in use the
    two outputs are then bit-identical (stereo FEC decoding updates the stereo predictor, so
    there only the positive direction holds).
    """
    x = speech(rate_hz)
    if channels == 2:
        x = np.ascontiguousarray(np.stack([x, 0.5 * np.roll(x, 23)], axis=1))
    n = rate_hz * ms // 1000
    packets = encode_all(OpusEncoder(sample_rate=rate_hz, channels=channels, bitrate=32000), x, n)
    a, b = OpusDecoder(rate_hz, channels), OpusDecoder(rate_hz, channels)
    positives = negatives = 0
    for k in range(3, len(packets) - 1, 2):
        for d in (a, b):
            d.reset()
            for p in packets[k - 3 : k]:
                d.decode(p)
        nxt = packets[k + 1]
        same = np.array_equal(a.decode_fec(nxt, n), b.conceal(n))
        if OpusDecoder.packet_has_fec(nxt):
            positives += 1
            assert not same, k
        elif channels == 1 and nxt[0] >> 3 < 12 and nxt[0] >> 3 == packets[k - 1][0] >> 3:
            negatives += 1
            assert same, k
    assert positives >= 10
    if channels == 1 and rate_hz <= 16000:  # SILK-only: silence gaps give negatives
        assert negatives >= 3


# ---------------------------------------------------------------------------------------------
# FEC recovery


def voicing(frame: npt.NDArray[np.float32], rate_hz: int) -> float:
    """Peak normalised autocorrelation of the frame over pitch lags of 60-400 Hz."""
    f = frame.astype(np.float64) - np.mean(frame)
    n = f.size
    spec = np.fft.rfft(f, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[:n]  # ac[l] = sum f[t] f[t + l]
    cum = np.concatenate([[0.0], np.cumsum(f**2)])
    lags = np.arange(rate_hz // 400, rate_hz // 60 + 1)
    head = cum[n - lags]  # energy of f[: n - l]
    tail = cum[n] - cum[lags]  # energy of f[l:]
    norm = np.sqrt(head * tail)
    valid = norm > 1e-20
    return float(np.max(ac[lags][valid] / norm[valid])) if np.any(valid) else 0.0


def test_fec_recovers_isolated_losses(speech_48k: FloatArray) -> None:
    """In-band FEC at 32 kb/s, expected loss 10 %, against 10 % random loss (12 seeded patterns).

    Measurement: the packets are decoded three times through the same loss pattern, each by its
    own decoder from a fresh state: the reference decodes every packet (loss-free); the FEC
    decoder, at a lost frame k whose successor arrived, calls decode_fec(packet[k+1], 960) and
    then decodes packet[k+1] normally (a lost frame whose successor is lost too is concealed);
    the PLC decoder calls conceal(960) for every lost frame. Since all three decoders share the
    history up to the loss, the two candidates for frame k differ only in how the loss is
    handled. SNR(k) = 10 log10(sum ref_k^2 / sum (out_k - ref_k)^2) over the 20 ms frame,
    without any realignment (same codec delay everywhere).

    Frames counted: isolated losses (k-1 and k+1 received) of active voiced speech: the
    reference frame is at least -40 dBFS (the fixture's active speech level is about -22 dBFS)
    and voiced (peak normalised autocorrelation >= 0.5 at 60-400 Hz pitch lags). Unvoiced
    frames are noise-excited, so any resynthesis, even a good one, has a waveform SNR near
    0 dB against the reference; waveform SNR says nothing about them.

    A frame is recovered when packet[k+1] carries LBRR (packet_has_fec) and its FEC decode is
    at least 6 dB above its concealment. Requirement: >= 75 % of the counted frames recovered.
    Over all isolated lost frames at >= -40 dBFS, voiced or not, the mean SNR of the FEC decode
    must also exceed that of concealment by >= 6 dB.
    """
    n = 960
    packets = encode_all(OpusEncoder(bitrate=32000, fec=True, packet_loss_perc=10), speech_48k, n)
    ref_dec = OpusDecoder()
    ref = [ref_dec.decode(p) for p in packets]
    level_db = [20 * np.log10(np.sqrt(np.mean(r.astype(np.float64) ** 2)) + 1e-12) for r in ref]
    voiced = [voicing(r, 48000) >= 0.5 for r in ref]

    counted = recovered = 0
    gains_all: list[tuple[float, float]] = []
    for seed in range(12):
        lost = np.random.default_rng(seed).random(len(packets)) < 0.10
        lost[0] = lost[-1] = False
        fec_dec, plc_dec = OpusDecoder(), OpusDecoder()
        fec_out, plc_out = [], []
        for k, p in enumerate(packets):
            if lost[k]:
                fec_out.append(
                    fec_dec.decode_fec(packets[k + 1], n) if not lost[k + 1] else fec_dec.conceal(n)
                )
                plc_out.append(plc_dec.conceal(n))
            else:
                fec_out.append(fec_dec.decode(p))
                plc_out.append(plc_dec.decode(p))
        for k in range(1, len(packets) - 1):
            if not lost[k] or lost[k - 1] or lost[k + 1] or level_db[k] < -40:
                continue
            snr_fec, snr_plc = snr_db(ref[k], fec_out[k]), snr_db(ref[k], plc_out[k])
            gains_all.append((snr_fec, snr_plc))
            if voiced[k]:
                counted += 1
                recovered += OpusDecoder.packet_has_fec(packets[k + 1]) and snr_fec >= snr_plc + 6
    assert counted >= 100
    assert recovered / counted >= 0.75, (recovered, counted)
    mean_fec, mean_plc = np.mean(gains_all, axis=0)
    assert mean_fec >= mean_plc + 6, (mean_fec, mean_plc)


def test_decode_fec_for_a_longer_gap_conceals_then_recovers(speech_48k: FloatArray) -> None:
    packets = encode_all(OpusEncoder(), speech_48k[:48000], 960)
    dec = OpusDecoder()
    for p in packets[:20]:
        dec.decode(p)
    out = dec.decode_fec(packets[22], 1920)  # frames 20 and 21 lost: 40 ms
    assert out.shape == (1920,)
    assert dec.decode(packets[22]).shape == (960,)


# ---------------------------------------------------------------------------------------------
# Errors and bad input


def test_opus_error_type() -> None:
    assert issubclass(OpusError, RuntimeError)
    assert rtvoice.OpusError is OpusError
    with pytest.raises(OpusError) as info:
        OpusDecoder().decode(b"\xff" * 10)  # code 3, 63 frames of 2.5 ms: over 120 ms
    assert info.value.code == OPUS_INVALID_PACKET
    assert "corrupted stream" in str(info.value)
    assert "-4" in str(info.value)
    assert rtvoice._core.libopus_version().startswith("libopus ")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 44100},
        {"sample_rate": 0},
        {"channels": 0},
        {"channels": 3},
        {"application": "music"},
        {"bitrate": 500},
        {"bitrate": 600000},
        {"complexity": -1},
        {"complexity": 11},
        {"packet_loss_perc": -1},
        {"packet_loss_perc": 101},
    ],
)
def test_encoder_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    (name,) = kwargs
    with pytest.raises(ValueError, match=f"{name} must be"):
        OpusEncoder(**kwargs)  # type: ignore[arg-type]


def test_setters_reject_bad_values_and_keep_the_old_ones() -> None:
    enc = OpusEncoder()
    for name, value in (("bitrate", 1000), ("complexity", 42), ("packet_loss_perc", 200)):
        before = getattr(enc, name)
        with pytest.raises(ValueError, match=f"{name} must be between"):
            setattr(enc, name, value)
        assert getattr(enc, name) == before
    with pytest.raises(ValueError, match="bitrate must be between"):
        enc.set_bitrate(-1)


@pytest.mark.parametrize("kwargs", [{"sample_rate": 22050}, {"channels": 3}, {"channels": 0}])
def test_decoder_rejects_bad_settings(kwargs: dict[str, int]) -> None:
    (name,) = kwargs
    with pytest.raises(ValueError, match=f"{name} must be"):
        OpusDecoder(**kwargs)


def test_encode_rejects_bad_frames() -> None:
    enc = OpusEncoder()
    with pytest.raises(TypeError):
        enc.encode(np.zeros(960, np.float64))
    with pytest.raises(TypeError):
        enc.encode(np.zeros(960, np.int32))
    with pytest.raises(TypeError):
        enc.encode([0.0] * 960)  # type: ignore[arg-type]
    for samples in (0, 1, 120, 240, 959, 961, 1440, 3840, 5760, 48000):
        with pytest.raises(ValueError, match="10, 20, 40 or 60 ms"):
            enc.encode(np.zeros(samples, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        enc.encode(np.zeros(1920, np.float32)[::2])
    with pytest.raises(ValueError, match="channels"):
        enc.encode(np.zeros((960, 2), np.float32))
    with pytest.raises(ValueError, match="1-D"):
        enc.encode(np.zeros((960, 1, 1), np.float32))
    stereo = OpusEncoder(channels=2)
    with pytest.raises(ValueError, match="channels"):
        stereo.encode(np.zeros(1920, np.float32))  # 1-D is mono only
    with pytest.raises(ValueError, match="C-contiguous"):
        stereo.encode(np.zeros((2, 960), np.float32).T)
    assert len(stereo.encode(np.zeros((960, 2), np.int16))) > 0
    assert len(enc.encode(np.zeros((960, 1), np.float32))) > 0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_encode_codes_non_finite_samples_as_zero_and_counts_them(
    value: float, speech_48k: FloatArray
) -> None:
    enc, ref = OpusEncoder(), OpusEncoder()
    frame = speech_48k[4800:5760].copy()
    zeroed = frame.copy()
    frame[500] = value
    zeroed[500] = 0.0
    assert enc.encode(frame) == ref.encode(zeroed)
    assert enc.nonfinite_samples == 1
    assert ref.nonfinite_samples == 0
    stereo = np.zeros((960, 2), np.float32)
    stereo[959, 1] = value
    st = OpusEncoder(channels=2)
    assert len(st.encode(stereo)) > 0
    assert st.nonfinite_samples == 1
    # The stream goes on exactly as if zeros had been offered.
    assert enc.encode(speech_48k[:960]) == ref.encode(speech_48k[:960])
    # The caller's array is not modified.
    assert not np.isfinite(frame[500])


def test_decode_rejects_bad_arguments() -> None:
    dec = OpusDecoder()
    with pytest.raises(ValueError, match="empty"):
        dec.decode(b"")
    with pytest.raises(ValueError, match="at most"):
        dec.decode(b"\x08" * (1275 * 3 + 7))
    with pytest.raises(ValueError, match="at most"):
        dec.decode(bytes(100000))
    with pytest.raises(TypeError):
        dec.decode("abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        dec.decode(np.zeros(10, np.int16))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        dec.decode(b"\x08\x00", dtype=np.float64)
    for frame_samples in (0, -960, 100, 959, 5760 + 120, 2**31 - 1):
        with pytest.raises(ValueError, match="frame_samples"):
            dec.conceal(frame_samples)
        with pytest.raises(ValueError, match="frame_samples"):
            dec.decode_fec(b"\x08\x00", frame_samples)
    with pytest.raises(ValueError, match="empty"):
        dec.decode_fec(b"", 960)
    with pytest.raises(ValueError, match="sample_rate must be"):
        OpusDecoder.packet_samples(b"\x08", sample_rate=44100)
    with pytest.raises(OpusError):
        OpusDecoder.packet_samples(b"\xff\xff")
    with pytest.raises(ValueError, match="empty"):
        OpusDecoder.packet_has_fec(b"")


def test_decode_accepts_bytes_like_packets(speech_48k: FloatArray) -> None:
    p = OpusEncoder().encode(speech_48k[:960])
    for packet in (p, bytearray(p), memoryview(p), np.frombuffer(p, np.uint8)):
        assert OpusDecoder().decode(packet).shape == (960,)  # type: ignore[arg-type]


def test_garbage_packets_never_crash(speech_48k: FloatArray) -> None:
    """Random bytes of every size class: either a clean decode of the advertised length or an
    OpusError/ValueError; the decoder keeps working afterwards."""
    rng = np.random.default_rng(1234)
    dec = OpusDecoder()
    good = encode_all(OpusEncoder(), speech_48k[:9600], 960)
    sizes = [1] * 256 + [2, 3, 4, 7, 20, 100, 500, 1275, 1276, 2000, 3825, 3831] * 40
    decoded = errors = 0
    for i, size in enumerate(sizes):
        packet = bytes([i % 256]) if size == 1 else rng.integers(0, 256, size, np.uint8).tobytes()
        try:
            out = dec.decode(packet)
        except (OpusError, ValueError):
            errors += 1
        else:
            decoded += 1
            assert out.shape == (OpusDecoder.packet_samples(packet),)
            assert np.all(np.isfinite(out))
        with contextlib.suppress(OpusError, ValueError):
            assert dec.decode_fec(packet, 960).shape == (960,)
        with contextlib.suppress(ValueError):
            OpusDecoder.packet_has_fec(packet)
    assert decoded > 0
    assert errors > 0
    for size in (3832, 1275 * 4, 70000):
        with pytest.raises((OpusError, ValueError)):
            dec.decode(rng.integers(0, 256, size, np.uint8).tobytes())
    dec.reset()
    ref = OpusDecoder()
    for p in good:
        assert np.array_equal(dec.decode(p), ref.decode(p))


def test_concurrent_use_of_one_encoder_is_an_error_not_corruption(speech_48k: FloatArray) -> None:
    enc = OpusEncoder()
    frame = np.ascontiguousarray(speech_48k[:2880])
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        for _ in range(200):
            try:
                enc.encode(frame)
            except RuntimeError as e:
                errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("two threads" in str(e) for e in errors)
