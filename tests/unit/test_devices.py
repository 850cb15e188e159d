"""rtvoice.audio.devices without a sound server: choosing devices, the missing-library errors and
the rate a device is opened at."""

from __future__ import annotations

import builtins
import re
from types import SimpleNamespace
from typing import Any

import pytest

from rtvoice.audio import devices
from rtvoice.audio.devices import DeviceInfo, resolve_device
from rtvoice.audio.sources import DeviceError


def _info(
    index: int,
    name: str,
    *,
    inputs: int = 2,
    outputs: int = 2,
    rate: float = 48000.0,
    default: bool = False,
) -> DeviceInfo:
    return DeviceInfo(index, name, "ALSA", inputs, outputs, rate, default, default)


FAKE = [
    _info(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", rate=44100.0),
    _info(1, "USB Audio Device: - (hw:1,0)", outputs=0),
    _info(2, "pulse"),
    _info(3, "default", default=True),
    _info(4, "HDMI 0", inputs=0, rate=96000.0),
]


@pytest.fixture
def fake_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "list_devices", lambda: list(FAKE))


@pytest.mark.usefixtures("fake_devices")
def test_devices_are_chosen_by_index_exact_name_or_unique_part() -> None:
    assert resolve_device(None, "input").name == "default"
    assert resolve_device(2, "input").name == "pulse"
    assert resolve_device("2", "output").name == "pulse"
    assert resolve_device("PULSE", "input").index == 2
    assert resolve_device("usb", "input").index == 1
    assert resolve_device("hdmi", "output").index == 4


@pytest.mark.usefixtures("fake_devices")
def test_a_device_that_matches_nothing_or_too_much_lists_the_choices() -> None:
    with pytest.raises(DeviceError, match=r"no input device matches 'nope'; input devices: 0: "):
        resolve_device("nope", "input")
    with pytest.raises(DeviceError, match="no output device with index 1"):
        resolve_device(1, "output")  # the USB device has no output
    with pytest.raises(DeviceError, match="no input device matches 'hdmi'"):
        resolve_device("hdmi", "input")
    with pytest.raises(DeviceError, match=r"is ambiguous: 'HDA Intel PCH.*', 'HDMI 0'"):
        resolve_device("hd", "output")


def test_devices_open_at_their_own_rate_when_it_is_converted_natively() -> None:
    assert FAKE[0].rate_hz == 44100
    assert FAKE[2].rate_hz == 48000
    assert FAKE[4].rate_hz == devices.DEVICE_RATE_HZ  # 96 kHz: opened at 48 kHz


@pytest.mark.parametrize(
    ("raised", "fix"),
    [
        (OSError("PortAudio library not found"), "apt-get install libportaudio2"),
        (ImportError("No module named 'sounddevice'"), "pip install 'rtvoice[devices]'"),
    ],
)
def test_a_missing_portaudio_or_sounddevice_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, fix: str
) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sounddevice":
            raise raised
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DeviceError, match=re.escape(fix)):
        devices.import_sounddevice()


def test_a_stream_is_gone_after_the_start_grace_until_it_runs_then_after_the_stall_limit() -> None:
    # Virtual clock; the Uplink stand-in only has the stats the check reads.
    uplink = SimpleNamespace(stats={"device_blocks": 0})
    downlink = SimpleNamespace(stats={"device_blocks": 0})
    streams = devices.DeviceStreams(
        uplink,  # type: ignore[arg-type]
        downlink,  # type: ignore[arg-type]
        input_device=FAKE[2],
        output_device=None,
    )
    streams._input = SimpleNamespace(active=True)
    streams._last_progress_ns = {"input": 0, "output": 0}
    s = 1_000_000_000
    streams.check(now_ns=int(devices.STALL_S * s) + s)  # no block yet: still starting
    with pytest.raises(DeviceError, match=r"microphone 'pulse' \(index 2\) disappeared"):
        streams.check(now_ns=int(devices.START_STALL_S * s) + s // 10)
    # A stream primed with a few blocks and then held while the server starts (PulseAudio
    # through ALSA holds a speaker's first three 20 ms blocks for about 1.7 s) is still starting.
    streams._last_progress_ns = {"input": 0, "output": 0}
    uplink.stats["device_blocks"] = 3
    streams.check(now_ns=0)
    streams.check(now_ns=int(devices.STALL_S * s) + s // 2)
    with pytest.raises(DeviceError, match=r"no audio block for 5\.[01] s"):
        streams.check(now_ns=int(devices.START_STALL_S * s) + s // 10)
    # Once half a second of blocks has flowed, a stall of more than STALL_S is a lost device.
    streams._last_progress_ns = {"input": 0, "output": 0}
    uplink.stats["device_blocks"] = int(devices.STARTED_AUDIO_S * 1000) // streams.block_ms
    streams.check(now_ns=s)
    streams.check(now_ns=s + int(devices.STALL_S * s) - s // 10)
    with pytest.raises(DeviceError, match=r"no audio block for 1\.[56] s"):
        streams.check(now_ns=s + int(devices.STALL_S * s) + s // 10)
