"""rtvoice.Resampler: quality for every rate pair, exact counts, streaming == one-shot, errors."""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import numpy.typing as npt
import pytest

from rtvoice import Resampler

RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
PAIRS = [(a, b) for a in RATES for b in RATES if a != b]
PAIR_IDS = [f"{a}-{b}" for a, b in PAIRS]

REJECTION_DB = 110.0
PASSBAND_DB = 0.01
THD_N_DB = -100.0
LATENCY_BUDGET_S = 3e-3
# A linear-phase Kaiser filter with >= 110 dB stopband from 1.1 x and a flat passband to 0.9 x the
# lower Nyquist needs 38 periods of the lower rate on each side: 4.75 ms at 8 kHz, plus less than
# one output frame to make the delay whole. Pairs with 8 kHz therefore get this documented budget
# instead of 3 ms; every other pair must meet 3 ms.
LATENCY_BUDGET_8K_S = 4.8e-3

EDGE_S = 0.012  # skipped at both ends of a tone: longer than the longest impulse response
TONE_S = 0.25


def _resample_all(r: Resampler, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """One-shot: the whole input, then the held-back tail, with the latency removed."""
    y = np.concatenate([r.process(x), r.flush()])
    return y[r.latency_samples :]


def _sweep(in_rate: int, out_rate: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Tone frequencies and whether each is in the passband (else it must be rejected)."""
    nyq_low = min(in_rate, out_rate) / 2
    passband = np.concatenate([[50.0, 997.0], np.linspace(0.02, 0.9, 22) * nyq_low])
    if 1.1 * nyq_low < 0.999 * in_rate / 2:  # else every input above 0.9 x is transition band
        stopband = np.linspace(1.1 * nyq_low, 0.999 * in_rate / 2, 24)
    else:
        stopband = np.zeros(0)
    freqs = np.concatenate([passband, stopband])
    return freqs, np.arange(len(freqs)) < len(passband)


def _fit_tone(
    y: npt.NDArray[np.float64], f_hz: float, rate: int, phase: float, start: int
) -> tuple[float, float, npt.NDArray[np.float64]]:
    """Least-squares fit of a*sin(t) + b*cos(t), t the ideal phase of the delay-compensated tone.

    Returns the gain, the phase error (rad) and the residual. If the output were not exactly the
    input delayed by latency_samples, the phase error would be large.
    """
    m = np.arange(start, start + len(y))
    t = 2 * np.pi * f_hz * m / rate + phase
    basis = np.stack([np.sin(t), np.cos(t)], axis=1)
    (a, b), *_ = np.linalg.lstsq(basis, y, rcond=None)
    return math.hypot(a, b), math.atan2(b, a), y - basis @ np.array([a, b])


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=PAIR_IDS)
def test_quality_sweep(in_rate: int, out_rate: int) -> None:
    """Alias/image rejection, passband flatness and exact delay over a tone sweep.

    Each channel of one multi-channel Resampler carries one full-scale (amplitude 1) tone with a
    random phase; the output, with latency_samples removed, is analysed away from both ends.

    * Passband tones (50 Hz, 997 Hz and 22 tones from 0.02 to 0.9 x the lower Nyquist): a
      least-squares fit of the tone at its ideal, delay-compensated phase gives the gain (must be
      within +-0.01 dB), the phase error (must be ~0: the output is the input delayed by exactly
      latency_samples) and the residual.
    * Stopband tones (downsampling only: 24 tones from 1.1 x the output Nyquist to 0.999 x the
      input Nyquist, when that range exists; 24k->22.05k and 48k->44.1k have none): the whole
      output is residual.

    Rejection = 10 log10(tone power / residual power), where the residual is everything in the
    output except the wanted tone: aliases, images, distortion and rounding noise. The worst tone
    must reach 110 dB. Tones in the transition band 0.9-1.1 x the lower Nyquist are not swept:
    the design lets them alias or image only into that band, as most resamplers do.
    """
    _check_quality(in_rate, out_rate, "auto")


def _check_quality(in_rate: int, out_rate: int, kernel: str) -> None:
    """The checks of test_quality_sweep, with the given kernel."""
    freqs, is_pass = _sweep(in_rate, out_rate)
    rng = np.random.default_rng(in_rate * 7 + out_rate)
    phases = rng.uniform(0, 2 * np.pi, len(freqs))
    n_in = int(TONE_S * in_rate)
    n = np.arange(n_in)[:, None]
    x = np.sin(2 * np.pi * freqs[None, :] * n / in_rate + phases[None, :]).astype(np.float32)

    r = Resampler(in_rate, out_rate, channels=len(freqs), kernel=kernel)
    y = _resample_all(r, np.ascontiguousarray(x)).astype(np.float64)
    assert y.shape == (math.ceil(n_in * out_rate / in_rate), len(freqs))
    edge = int(EDGE_S * out_rate)
    seg = y[edge:-edge]

    worst_rejection = np.inf
    worst_gain_db = 0.0
    for k, f_hz in enumerate(freqs):
        if is_pass[k]:
            gain, phase_err, residual = _fit_tone(seg[:, k], f_hz, out_rate, phases[k], edge)
            gain_db = 20 * math.log10(gain)
            assert abs(gain_db) <= PASSBAND_DB, f"{f_hz:.0f} Hz: gain {gain_db:+.5f} dB"
            assert abs(phase_err) < 1e-5, f"{f_hz:.0f} Hz: phase error {phase_err:.2e} rad"
            worst_gain_db = max(worst_gain_db, abs(gain_db))
        else:
            residual = seg[:, k]
        rejection = 10 * math.log10(0.5 / np.mean(residual**2))
        assert rejection >= REJECTION_DB, f"{f_hz:.0f} Hz tone: rejection {rejection:.1f} dB"
        worst_rejection = min(worst_rejection, rejection)
    # The quality must come from the filter, not from a silent output.
    assert worst_gain_db < PASSBAND_DB
    assert np.isfinite(worst_rejection)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=PAIR_IDS)
def test_thd_n_1khz(in_rate: int, out_rate: int) -> None:
    """THD+N of a 1 kHz tone at -6 dBFS: residual after a free least-squares sine fit."""
    n_in = int(TONE_S * in_rate)
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(n_in) / in_rate + 0.3)).astype(np.float32)
    y = _resample_all(Resampler(in_rate, out_rate), x).astype(np.float64)
    edge = int(EDGE_S * out_rate)
    seg = y[edge:-edge]
    t = 2 * np.pi * 1000.0 * np.arange(len(seg)) / out_rate
    basis = np.stack([np.sin(t), np.cos(t), np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, seg, rcond=None)
    residual = seg - basis @ coef
    thd_n_db = 10 * math.log10(np.mean(residual**2) / np.mean(seg**2))
    assert thd_n_db <= THD_N_DB, f"THD+N {thd_n_db:.1f} dB"
    assert 0.49 < math.hypot(coef[0], coef[1]) < 0.51


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=PAIR_IDS)
def test_latency_budget(in_rate: int, out_rate: int) -> None:
    r = Resampler(in_rate, out_rate)
    budget = LATENCY_BUDGET_8K_S if 8000 in (in_rate, out_rate) else LATENCY_BUDGET_S
    assert 0 < r.latency_seconds <= budget + 1e-12
    assert r.latency_seconds == pytest.approx(r.latency_samples / out_rate)
    # latency_samples is the true delay: an impulse comes out centred there.
    x = np.zeros(int(0.02 * in_rate), np.float32)
    x[0] = 1.0
    y = np.concatenate([r.process(x), r.flush()])
    peak = int(np.argmax(np.abs(y)))
    assert abs(peak - r.latency_samples) <= math.ceil(out_rate / in_rate / 2)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=PAIR_IDS)
def test_exact_counts(in_rate: int, out_rate: int) -> None:
    chunk_in = in_rate // 50
    chunk_out = out_rate // 50
    r = Resampler(in_rate, out_rate)
    rng = np.random.default_rng(1)
    for _ in range(5):  # 20 ms in, exactly 20 ms out, from the very first call
        assert r.output_frames(chunk_in) == chunk_out
        assert len(r.process(rng.standard_normal(chunk_in).astype(np.float32) * 0.1)) == chunk_out
    r.reset()
    total_in = total_out = 0
    for size in rng.integers(0, 700, 40):
        expected = math.ceil((total_in + size) * out_rate / in_rate) - total_out
        assert r.output_frames(int(size)) == expected
        out = r.process(np.zeros(size, np.float32))
        assert len(out) == expected
        total_in += int(size)
        total_out += expected
    assert total_out == math.ceil(total_in * out_rate / in_rate)
    assert len(r.flush()) == r.latency_samples
    # flush() starts a new stream
    assert r.output_frames(chunk_in) == chunk_out


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=PAIR_IDS)
def test_streaming_equals_one_shot(in_rate: int, out_rate: int) -> None:
    _check_streaming(in_rate, out_rate, "auto")


def _check_streaming(in_rate: int, out_rate: int, kernel: str) -> None:
    """Bit-identical output for odd lengths x chunk sizes, and for random chunkings."""
    rng = np.random.default_rng(in_rate + out_rate)
    for length in (1, 7, 1001, 4801):
        x = (rng.standard_normal(length) * 0.3).astype(np.float32)
        r = Resampler(in_rate, out_rate, kernel=kernel)
        whole = np.concatenate([r.process(x), r.flush()])
        for chunk in (1, 3, 17, 160, 441, 999, 2053):
            if chunk > length and chunk != 3:
                continue
            parts = [r.process(x[i : i + chunk]) for i in range(0, length, chunk)]
            got = np.concatenate([*parts, r.flush()])
            assert np.array_equal(got, whole), f"length {length}, chunk {chunk}"
        sizes = rng.integers(0, 300, 64)
        bounds = np.minimum(np.cumsum(np.concatenate([[0], sizes])), length)
        parts = [r.process(x[a:b]) for a, b in itertools.pairwise(bounds)]
        parts.append(r.process(x[bounds[-1] :]))
        assert np.array_equal(np.concatenate([*parts, r.flush()]), whole), f"random, {length}"


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 48000), (48000, 44100), (44100, 8000)])
def test_multichannel_matches_mono(in_rate: int, out_rate: int) -> None:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3001, 3)) * 0.3).astype(np.float32)
    r = Resampler(in_rate, out_rate, channels=3)
    y = np.concatenate([r.process(x[:1234]), r.process(x[1234:]), r.flush()])
    assert y.shape == (math.ceil(3001 * out_rate / in_rate) + r.latency_samples, 3)
    for c in range(3):
        mono = Resampler(in_rate, out_rate)
        ref = np.concatenate([mono.process(np.ascontiguousarray(x[:, c])), mono.flush()])
        assert np.array_equal(y[:, c], ref)


# One pair per code path: integer upsampling, integer decimation, general ratios both ways.
KERNEL_PAIRS = [(8000, 48000), (48000, 16000), (44100, 48000), (48000, 22050)]


@pytest.mark.parametrize(("in_rate", "out_rate"), KERNEL_PAIRS)
def test_portable_kernel(in_rate: int, out_rate: int) -> None:
    """The plain C++ kernels (what CPUs without AVX2+FMA run) meet the same bar."""
    _check_quality(in_rate, out_rate, "portable")
    _check_streaming(in_rate, out_rate, "portable")
    x = np.random.default_rng(8).standard_normal(3000).astype(np.float32) * 0.3
    fast = Resampler(in_rate, out_rate).process(x)
    portable = Resampler(in_rate, out_rate, kernel="portable")
    assert portable.kernel == "portable"
    assert np.max(np.abs(portable.process(x) - fast)) < 1e-5


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 48000), (48000, 16000), (44100, 48000)])
def test_int16_matches_float_path(in_rate: int, out_rate: int) -> None:
    rng = np.random.default_rng(9)
    x16 = rng.integers(-32768, 32768, 5000).astype(np.int16)
    x16[100:200] = 32767  # a clipping stretch: the overshoot must saturate, not wrap
    x16[200:300] = -32768
    r16 = Resampler(in_rate, out_rate, dtype=np.int16)
    y16 = np.concatenate([r16.process(x16[:777]), r16.process(x16[777:]), r16.flush()])
    rf = Resampler(in_rate, out_rate)
    yf = np.concatenate([rf.process(x16.astype(np.float32) / 32768), rf.flush()])
    expected = np.clip(np.rint(yf * np.float32(32768)), -32768, 32767).astype(np.int16)
    assert y16.dtype == np.int16
    assert np.array_equal(y16, expected)
    assert np.max(yf * 32768) > 32767  # the test really exercised saturation


def test_flush_resets_and_reset_restarts() -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(2000) * 0.3).astype(np.float32)
    r = Resampler(16000, 48000)
    first = np.concatenate([r.process(x), r.flush()])
    second = np.concatenate([r.process(x), r.flush()])
    assert np.array_equal(first, second)
    r.process(x[:333])
    r.reset()
    assert np.array_equal(np.concatenate([r.process(x), r.flush()]), first)
    assert np.any(first != 0)


@pytest.mark.parametrize("rate", RATES)
def test_same_rate_passes_through(rate: int) -> None:
    x = np.random.default_rng(3).standard_normal((999, 2)).astype(np.float32)
    r = Resampler(rate, rate, channels=2)
    assert r.latency_samples == 0
    assert np.array_equal(r.process(x), x)
    assert r.flush().shape == (0, 2)


def test_process_into_matches_process() -> None:
    x = np.random.default_rng(4).standard_normal(480).astype(np.float32)
    a, b = Resampler(24000, 48000), Resampler(24000, 48000)
    out = np.full(1000, np.nan, np.float32)
    for _ in range(3):
        assert b.process_into(x, out) == 960
        assert np.array_equal(out[:960], a.process(x))
    assert np.all(np.isnan(out[960:]))
    with pytest.raises(ValueError, match="output_frames"):
        b.process_into(x, np.zeros(959, np.float32))
    buf = np.zeros(2000, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        b.process_into(buf[:480], buf[100:1100])


def test_silence_stays_silent_and_dc_passes() -> None:
    r = Resampler(44100, 48000)
    assert not np.any(r.process(np.zeros(4410, np.float32)))
    r.reset()
    y = np.concatenate([r.process(np.full(44100, 0.25, np.float32)), r.flush()])
    steady = y[1000:-1000]
    assert np.max(np.abs(steady - 0.25)) < 1e-6


def test_threads_may_use_separate_instances() -> None:
    x = np.random.default_rng(6).standard_normal(48000).astype(np.float32)
    ref = Resampler(48000, 16000).process(x)
    results: list[npt.NDArray[np.float32]] = []

    def work() -> None:
        results.append(Resampler(48000, 16000).process(x))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert all(np.array_equal(y, ref) for y in results)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((44100, 11025), {}, "unsupported rate pair"),
        ((96000, 48000), {}, "unsupported rate pair"),
        ((0, 48000), {}, "unsupported rate pair"),
        ((-8000, 48000), {}, "unsupported rate pair"),
        ((48000, 24000), {"channels": 0}, "channels"),
        ((48000, 24000), {"channels": 65}, "channels"),
    ],
)
def test_bad_construction_raises_value_error(
    args: tuple[int, int], kwargs: dict[str, int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Resampler(*args, **kwargs)


def test_bad_kernel_raises_value_error() -> None:
    with pytest.raises(ValueError, match="kernel"):
        Resampler(48000, 24000, kernel="avx512")


def test_bad_dtype_argument_raises_type_error() -> None:
    with pytest.raises(TypeError, match="dtype"):
        Resampler(48000, 24000, dtype=np.float64)


def test_bad_chunks_raise() -> None:
    r = Resampler(48000, 24000, channels=2)
    good = np.zeros((480, 2), np.float32)
    with pytest.raises(TypeError, match="dtype"):
        r.process(good.astype(np.float64))
    with pytest.raises(TypeError, match="dtype"):
        r.process(good.astype(np.int16))
    with pytest.raises(ValueError, match="channels"):
        r.process(np.zeros((480, 3), np.float32))
    with pytest.raises(ValueError, match="1-D"):
        r.process(np.zeros(480, np.float32))
    with pytest.raises(ValueError, match="dimensions"):
        r.process(np.zeros((10, 2, 1), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        r.process(np.zeros((2, 480), np.float32).T)
    with pytest.raises(TypeError):
        r.process([0.0] * 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        r.output_frames(-1)
    ro = np.zeros((480, 2), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        r.process_into(good, ro)
    # the failed calls left no trace: counts are still exact from the start
    assert len(r.process(good)) == 240
