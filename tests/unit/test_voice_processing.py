"""Voice processing in the native core: rtvoice.AudioProcessor (WebRTC APM / SpeexDSP) and the
Uplink's capture path with the Downlink's render stream as the echo reference."""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt
import pytest

from rtvoice import AudioProcessor, Downlink, Uplink
from rtvoice._core import aec3_tuning, voice_processing_backends, voice_processing_libraries
from rtvoice.audio.engine import (
    REFERENCE_SLACK_MS,
    VoiceProcessing,
    apply_voice_processing,
    stream_delay_for,
)

RATE = 48000
FRAME = RATE // 100
BACKENDS = voice_processing_backends()


def _speechlike(seconds: float, seed: int) -> npt.NDArray[np.float32]:
    """Harmonic bursts with a moving pitch, 200 ms on / 100 ms off: speech-like for the
    cancellers' double-talk and voice detectors."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    gate = (np.floor(t / 0.3) % 3 != 2).astype(np.float64)
    x = x * gate + 0.02 * rng.standard_normal(n)
    return (0.25 * x / np.abs(x).max()).astype(np.float32)


def _echo(far: npt.NDArray[np.float32], delay_ms: int) -> npt.NDArray[np.float32]:
    """A room in miniature: a delay, a short decaying response, -6 dB."""
    rng = np.random.default_rng(3)
    taps = int(0.03 * RATE)
    h = rng.standard_normal(taps) * np.exp(-np.arange(taps) / (0.006 * RATE))
    h = 0.5 * h / np.sqrt((h**2).sum())
    d = int(delay_ms * RATE / 1000)
    y = np.convolve(np.concatenate([np.zeros(d), far]), h)[: far.size]
    return y.astype(np.float32)


def _power_db(x: npt.NDArray[np.float32]) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20))


def test_the_build_has_a_backend_and_names_it() -> None:
    assert BACKENDS
    assert set(BACKENDS) <= {"webrtc", "speex"}
    assert AudioProcessor().backend == BACKENDS[0]


@pytest.mark.skipif(sys.platform == "win32", reason="Windows wheels build without AEC3 (vcpkg)")
def test_the_webrtc_backend_is_the_aec3_release() -> None:
    # bootstrap.sh and the Linux and macOS wheel builds build webrtc-audio-processing 1.3
    # (scripts/wheels/build-webrtc-apm.sh); a build that fell back to Debian's 0.3 (AEC2) fails.
    libraries = voice_processing_libraries()
    assert set(libraries) == set(BACKENDS)
    assert libraries["webrtc"].startswith("webrtc-audio-processing 1."), libraries
    assert libraries["webrtc"].endswith("(AEC3)")
    # The core configures it (the build script installs the headers that takes): its linear
    # filter starts 20 ms before the estimated delay (through the audio server's loop the
    # library's 2 ms let about 1 reply in 12 through; tests/integration's AEC trials) and spans
    # 144 ms (a room's tail: benchmarks/aec's far-field scenes), its coarse filter 72 ms.
    assert aec3_tuning() == {"delay_headroom_ms": 20, "filter_ms": 144, "coarse_filter_ms": 72}
    assert BACKENDS[0] == "webrtc"


@pytest.mark.parametrize("backend", BACKENDS)
def test_echo_of_the_far_end_is_removed(backend: str) -> None:
    far = _speechlike(6.0, seed=1)
    mic = _echo(far, delay_ms=40)
    proc = AudioProcessor(RATE, backend=backend, noise_suppression=False, agc=False)
    out = proc.process(mic, far)
    # After 3 s of convergence the residual is well under the echo (benchmarks/aec measures how
    # far under, and how fast).
    tail = slice(3 * RATE, None)
    assert _power_db(mic[tail]) - _power_db(out[tail]) > 15.0
    stats = proc.stats
    assert stats["library"] == voice_processing_libraries()[backend]
    assert stats["frames"] == far.size // FRAME
    assert stats["render_frames"] == far.size // FRAME
    assert stats["echo_suppression_db"] > 10.0


@pytest.mark.skipif("webrtc" not in BACKENDS, reason="no WebRTC backend in this build")
def test_the_suppression_level_changes_what_the_webrtc_canceller_removes() -> None:
    # Double-talk: the user speaks over the echo. A higher level removes more (echo and some of
    # the user with it), a lower one keeps more; the same input through each level.
    far = _speechlike(6.0, seed=1)
    near = 0.5 * _speechlike(6.0, seed=7)
    near[: 3 * RATE] = 0.0
    mic = (_echo(far, delay_ms=40) + near).astype(np.float32)
    tail = slice(3 * RATE, None)
    kept = []
    for level in (0, 1, 2):
        proc = AudioProcessor(
            RATE, backend="webrtc", aec_suppression=level, noise_suppression=False, agc=False
        )
        kept.append(_power_db(proc.process(mic, far)[tail]))
    assert kept[0] > kept[1] > kept[2], kept


@pytest.mark.skipif("speex" not in BACKENDS, reason="no SpeexDSP backend in this build")
def test_the_speex_canceller_reaches_an_echo_past_its_filter_through_the_stream_delay() -> None:
    # MDF has no delay estimator and a 200 ms filter: an echo 300 ms late is out of its reach
    # unless the far end goes through the delay line of the stream delay (less 20 ms).
    far = _speechlike(6.0, seed=1)
    mic = _echo(far, delay_ms=300)
    tail = slice(3 * RATE, None)
    removed = {}
    for delay in (0, 300):
        proc = AudioProcessor(
            RATE, backend="speex", noise_suppression=False, agc=False, stream_delay_ms=delay
        )
        out = proc.process(mic, far)
        removed[delay] = _power_db(mic[tail]) - _power_db(out[tail])
        assert proc.stats["stream_delay_ms"] == delay
    assert removed[0] < 3.0, removed
    assert removed[300] > 15.0, removed
    # Told at run time (as `rtvoice talk` does once the devices report their latencies): the
    # filter starts again on the new alignment and converges.
    proc = AudioProcessor(RATE, backend="speex", noise_suppression=False, agc=False)
    before = proc.process(mic[: 3 * RATE], far[: 3 * RATE])
    proc.set_stream_delay_ms(300)
    after = proc.process(mic[3 * RATE :], far[3 * RATE :])
    assert _power_db(mic[2 * RATE : 3 * RATE]) - _power_db(before[2 * RATE :]) < 3.0
    assert _power_db(mic[4 * RATE :]) - _power_db(after[RATE:]) > 8.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_with_aec_off_the_echo_passes(backend: str) -> None:
    far = _speechlike(3.0, seed=1)
    mic = _echo(far, delay_ms=40)
    proc = AudioProcessor(
        RATE, backend=backend, aec=False, noise_suppression=False, agc=False, high_pass=False
    )
    out = proc.process(mic, far)
    assert abs(_power_db(mic[RATE:]) - _power_db(out[RATE:])) < 1.0
    assert proc.stats["aec"] is False


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_high_pass_filter_removes_rumble(backend: str) -> None:
    t = np.arange(2 * RATE) / RATE
    rumble = (0.3 * np.sin(2 * np.pi * 30 * t)).astype(np.float32)
    proc = AudioProcessor(RATE, backend=backend, aec=False, noise_suppression=False, agc=False)
    out = proc.process(rumble)
    assert _power_db(rumble[RATE:]) - _power_db(out[RATE:]) > 10.0


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="8000, 16000, 32000 or 48000"):
        AudioProcessor(44100)
    with pytest.raises(ValueError, match="'webrtc' or 'speex'"):
        AudioProcessor(backend="nope")
    proc = AudioProcessor()
    with pytest.raises(ValueError, match="whole 10 ms frames"):
        proc.process(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="as many samples"):
        proc.process(np.zeros(FRAME, np.float32), np.zeros(2 * FRAME, np.float32))
    with pytest.raises(TypeError):
        proc.process(np.zeros(FRAME, np.float64))
    with pytest.raises(ValueError, match="backend must be"):
        VoiceProcessing(backend="nope")


def test_nonfinite_capture_samples_do_not_poison_the_processor() -> None:
    proc = AudioProcessor(noise_suppression=False, agc=False)
    bad = np.full(FRAME * 10, np.nan, np.float32)
    out = proc.process(bad)
    assert np.isfinite(out).all()
    good = proc.process(_speechlike(0.5, seed=2))
    assert np.isfinite(good).all()


def _pcm_downlink(far: npt.NDArray[np.float32]) -> Downlink:
    down = Downlink(RATE, 1, "pcm16", pcm_prebuffer_ms=0)
    at24 = far[::2]
    down.push_pcm(np.ascontiguousarray(np.round(at24 * 32767).astype(np.int16)))
    return down


def test_the_uplink_cancels_the_echo_of_what_the_downlink_played() -> None:
    far = _speechlike(5.0, seed=4)
    down = _pcm_downlink(far)
    up = Uplink(RATE, 1, "pcm16", ring_ms=10000)
    apply_voice_processing(up, down, VoiceProcessing(noise_suppression=False, agc=False))
    block = 2 * FRAME  # a 20 ms device block on each side
    played = []
    for _ in range(far.size // block - 1):
        out = np.zeros((block, 1), np.float32)
        down.pull_into_device(out, 0)  # the speaker's callback
        played.append(out[:, 0].copy())
        # The microphone hears the speaker 40 ms later (its callback runs just after).
        heard = np.concatenate(played)[-block - int(0.04 * RATE) :][:block]
        if heard.size < block:
            heard = np.zeros(block, np.float32)
        up.push_from_device(np.ascontiguousarray(_echo(heard, 0).reshape(-1, 1)), 0)
    stats = up.stats
    assert stats["reference_underruns"] == 0
    assert stats["device_blocks"] == len(played)
    assert down.stats["device_blocks"] == len(played)
    proc = up.processing_stats
    assert proc is not None
    assert proc["render_frames"] == 2 * len(played)
    assert proc["active_render_frames"] > 100
    assert proc["echo_suppression_db"] > 15.0


def test_device_status_flags_are_counted() -> None:
    up = Uplink(RATE)
    down = Downlink(RATE)
    up.push_from_device(np.zeros((960, 1), np.float32), 0x2)  # paInputOverflow
    up.push_from_device(np.zeros((960, 1), np.float32), 0x1)  # paInputUnderflow
    out = np.zeros((960, 1), np.float32)
    down.pull_into_device(out, 0x4)  # paOutputUnderflow
    down.pull_into_device(out, 0)
    assert (up.stats["device_input_overflows"], up.stats["device_input_underflows"]) == (1, 1)
    assert up.stats["device_blocks"] == 2
    assert down.stats["device_output_underflows"] == 1
    assert down.stats["device_blocks"] == 2


def test_a_missing_reference_is_counted_and_a_runaway_one_realigned() -> None:
    up = Uplink(RATE)
    down = Downlink(RATE, 1, "pcm16", pcm_prebuffer_ms=0)
    apply_voice_processing(up, down, VoiceProcessing(reference_lead_ms=20))
    up.push(np.zeros(2 * FRAME, np.float32))  # the speaker has not played yet
    assert up.stats["reference_underruns"] == 2
    for _ in range(20):  # the speaker runs 400 ms ahead of the microphone
        down.pull(960, 0)
    up.push(np.zeros(FRAME, np.float32))
    assert up.stats["reference_resyncs"] == 1
    assert up.stats["reference_underruns"] == 2


def _reference_powers(
    schedule: str, *, lead_ms: int = 20
) -> tuple[list[float], list[float], dict[str, int]]:
    """Drive a speaker (``p``: one 20 ms playout block) and a microphone (``c``: one 20 ms
    capture block) in the order ``schedule`` gives. Returns the power of each 10 ms frame the
    speaker played, the power of each far-end frame the canceller was given with a capture frame
    (recovered from the smoothed render level after each frame), and the Uplink's counters."""
    rng = np.random.default_rng(7)
    frames = schedule.count("p") * 2 + 10
    gains = rng.uniform(0.05, 0.5, frames)  # every 10 ms frame at its own level
    far = (rng.standard_normal(frames * FRAME) * np.repeat(gains, FRAME)).astype(np.float32)
    down = Downlink(RATE, 1, "pcm16", pcm_prebuffer_ms=0)
    down.push_pcm(np.ascontiguousarray(np.round(np.clip(far, -1, 1) * 32767).astype(np.int16)))
    up = Uplink(RATE, 1, "pcm16", ring_ms=10000)
    apply_voice_processing(
        up, down, VoiceProcessing(noise_suppression=False, agc=False, reference_lead_ms=lead_ms)
    )
    played: list[float] = []
    given: list[float] = []
    level = 0.0
    for step in schedule:
        if step == "p":
            out = down.pull(2 * FRAME, 0)
            played += [float(np.mean(f.astype(np.float64) ** 2)) for f in out.reshape(2, FRAME)]
            continue
        for _ in range(2):
            up.push(np.zeros(FRAME, np.float32))
            proc = up.processing_stats
            assert proc is not None
            smoothed = 10 ** (proc["render_dbfs"] / 10) - 1e-12
            given.append((smoothed - 0.9 * level) / 0.1)  # the processor's 0.9/0.1 smoothing
            level = smoothed
    stats = up.stats
    counters = {k: int(stats[k]) for k in stats if k.startswith("reference_")}
    return played, given, counters


def _offsets(played: list[float], given: list[float]) -> list[int]:
    """For each far-end frame given (not silence), in order, how many frames it is behind the
    speaker."""
    found = []
    for j, g in enumerate(given):
        if g < 1e-6:
            continue  # a frame given as silence (underrun)
        matches = [j - i for i, p in enumerate(played) if abs(p - g) <= 1e-6 * p]
        assert len(matches) == 1, (j, matches)
        found.append(matches[0])
    return found


def test_a_late_speaker_grows_the_reference_lead_once() -> None:
    # The playout callback runs just before each capture callback, except twice, when the
    # microphone's callback comes twice in a row before the speaker's two catch up.
    schedule = "pc" * 10 + "cc" + "pp" + "pc" * 10 + "cc" + "pp" + "pc" * 10
    played, given, counters = _reference_powers(schedule)
    # The first time, four capture frames had no far end yet: each got silence and the reference
    # slipped by a frame. That lead is kept, so the second time nothing is missing and the
    # reference stays where it is: two alignments in all, and none forced.
    assert counters["reference_underruns"] == 4
    assert counters["reference_resyncs"] == 0
    late = _offsets(played, given)
    offsets = set(late)
    assert len(offsets) == 2
    assert max(offsets) - min(offsets) == 4
    assert late[-40:] == [max(offsets)] * 40  # everything after the first time


def test_a_capture_stall_and_its_burst_do_not_move_the_reference() -> None:
    # The microphone's callbacks stall for 160 ms while the speaker plays on (the far end runs
    # past the 120 ms the reference may lead by), then come in a burst: the capture stream lost
    # nothing, so the reference must stay where it was.
    schedule = "pc" * 10 + "p" * 8 + "c" * 8 + "pc" * 10
    played, given, counters = _reference_powers(schedule)
    assert counters["reference_resyncs"] == 0
    assert counters["reference_underruns"] == 0
    assert len(set(_offsets(played, given))) == 1


def test_a_speaker_that_stops_is_aligned_again_when_it_plays() -> None:
    # The speaker stops for 200 ms (more than the 100 ms of slack): not jitter. The reference is
    # aligned afresh when it plays again, once, with the lead it had.
    schedule = "pc" * 10 + "c" * 10 + "pppp" + "pc" * 10
    played, given, counters = _reference_powers(schedule)
    assert counters["reference_resyncs"] == 1
    assert counters["reference_underruns"] == 20
    assert len(set(_offsets(played, given))) == 2  # one alignment before the stop, one after


def _reply_heard_as_speech(echo_delay_ms: int, reported_delay_ms: int) -> bool:
    """A reply after 3.5 s of silence comes back at -10 dB after echo_delay_ms; the canceller
    (as `rtvoice talk` runs it: NS and AGC on) is told reported_delay_ms. Does the output hold
    60 ms above -45 dBFS during the reply, what the simulator's VAD takes for the user?"""
    from rtvoice.simulator.audio import speechlike

    n = int(6.5 * RATE)
    far = np.zeros(n, np.float32)
    reply = speechlike(1.9, seed=33).astype(np.float32) / 32768
    start = int(3.5 * RATE)
    far[start : start + reply.size] = reply
    d = int(echo_delay_ms * RATE / 1000)
    mic = np.zeros(n, np.float32)
    mic[d:] = far[: n - d] * 10 ** (-10 / 20)
    mic += np.random.default_rng(1).standard_normal(n).astype(np.float32) * 10 ** (-75 / 20)
    proc = AudioProcessor(RATE, backend="webrtc", stream_delay_ms=reported_delay_ms)
    out = np.concatenate(
        [proc.process(mic[k : k + FRAME], far[k : k + FRAME]) for k in range(0, n, FRAME)]
    )
    frames = out[start : start + 2 * RATE].reshape(-1, 2 * FRAME).astype(np.float64)
    loud = 10 * np.log10((frames**2).mean(axis=1) + 1e-20) > -45.0
    return any(loud[k : k + 3].all() for k in range(loud.size - 2))


@pytest.mark.skipif(
    "AEC3" not in voice_processing_libraries().get("webrtc", ""), reason="AEC3's behaviour"
)
@pytest.mark.parametrize("echo_delay_ms", [80, 200])
def test_the_delay_given_to_the_canceller_errs_short_of_the_echo(echo_delay_ms: int) -> None:
    vp = VoiceProcessing()
    # Devices whose latencies leave echo_delay_ms once the reference has grown an 80 ms lead.
    held_lead_ms = 80
    assert held_lead_ms <= vp.reference_lead_ms + REFERENCE_SLACK_MS
    latency_s = (echo_delay_ms + held_lead_ms) / 1000
    given = stream_delay_for(vp, latency_s / 2, latency_s / 2)
    assert given <= echo_delay_ms
    assert not _reply_heard_as_speech(echo_delay_ms, given)
    # Counting only the initial lead would tell the canceller 60 ms too much, and the start of
    # the reply comes back through it.
    assert _reply_heard_as_speech(
        echo_delay_ms, echo_delay_ms + held_lead_ms - vp.reference_lead_ms
    )


def test_processing_stages_switch_at_runtime_but_not_the_backend() -> None:
    up = Uplink(RATE)
    assert up.processing_stats is None
    up.set_processing(backend=BACKENDS[0])
    up.set_processing(aec=False, noise_suppression=False, agc=True, high_pass=False)
    up.push(np.zeros(FRAME, np.float32))
    stats = up.processing_stats
    assert stats is not None
    assert (stats["aec"], stats["noise_suppression"], stats["agc"], stats["high_pass"]) == (
        False,
        False,
        True,
        False,
    )
    assert stats["frames"] == 1
    if len(BACKENDS) > 1:
        with pytest.raises(ValueError, match="already runs on the"):
            up.set_processing(backend=BACKENDS[1])
    with pytest.raises(ValueError, match="mono"):
        Uplink(RATE, 2).set_processing()
    with pytest.raises(ValueError, match="8000, 16000, 32000 or 48000"):
        Uplink(44100).set_processing()


def test_without_processing_the_capture_path_is_unchanged() -> None:
    a = Uplink(RATE, 1, "pcm16")
    b = Uplink(RATE, 1, "pcm16")
    down = Downlink(RATE)
    b.set_echo_reference(down)  # a reference alone does not process
    pcm = _speechlike(0.2, seed=5)
    a.push(pcm)
    b.push(pcm)
    assert a.take_input(10**6).tobytes() == b.take_input(10**6).tobytes()


def test_audio_options_turn_processing_on_for_both_engines() -> None:
    from rtvoice.audio.engine import AudioEngine, AudioOptions

    options = AudioOptions(voice_processing=VoiceProcessing(agc=False))
    opus = AudioEngine("opus", options)
    stats = opus.stats()["uplink"]["processing"]
    assert (stats["aec"], stats["agc"]) == (True, False)
    # The 24 kHz PCM16 uplink is not at a canceller's rate: with processing it takes 48 kHz
    # input, processes it there and converts to 24 kHz after.
    pcm = AudioEngine("pcm16", options)
    assert pcm.uplink.input_rate == 48000
    assert pcm.stats()["uplink"]["processing"]["aec"] is True
    pcm.uplink.push(_speechlike(0.2, seed=3))
    assert pcm.stats()["uplink"]["processing"]["frames"] >= 19
    packet = pcm.uplink.pop_packet()
    assert packet is not None
    assert len(packet[0]) == 2 * 480  # a 20 ms PCM16 frame at 24 kHz
    # Without processing the PCM16 uplink stays at its 24 kHz.
    assert AudioEngine("pcm16", AudioOptions()).uplink.input_rate == 24000
    assert "processing" not in AudioEngine("opus", AudioOptions()).stats()["uplink"]


def _tone_hz(x: npt.NDArray[np.float32], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)


def test_a_device_at_its_own_rate_is_converted_natively_both_ways() -> None:
    dev = 44100
    block = dev // 50  # 20 ms device blocks
    t = np.arange(dev) / dev
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    up = Uplink(RATE, 1, "pcm16", ring_ms=4000)
    up.set_device_rate(dev)
    for k in range(0, tone.size - block + 1, block):
        assert up.push_from_device(np.ascontiguousarray(tone[k : k + block, None]), 0) == block
    got = up.take_input(10**6).reshape(-1)
    assert abs(got.size - RATE) < 100  # a second at 44.1 kHz is a second at 48 kHz
    assert abs(_tone_hz(got[2000:], RATE) - 1000) < 5

    down = _pcm_downlink(np.tile(_speechlike(0.1, seed=6), 10))
    down.set_device_rate(dev)
    played = []
    for _ in range(50):
        out = np.zeros((block, 1), np.float32)
        down.pull_into_device(out, 0)
        played.append(out[:, 0].copy())
    assert down.stats["device_blocks"] == 50
    assert np.concatenate(played).size == 50 * block
    # The Downlink itself produced a second at its own rate (give or take one 10 ms block).
    assert abs(down.stats["samples_pulled"] - RATE) <= RATE // 100
    with pytest.raises(ValueError, match="device_rate"):
        up.set_device_rate(11025)
