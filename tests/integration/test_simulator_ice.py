"""ICE against the simulator's ICE-lite mode (OpenAI's media servers) and its block_ice fault.

The consent fix itself (rtvoice.rtc.compat) is tested on virtual time in tests/unit/test_compat.py,
including that aioice's own consent checks lose a call to such a server within 35 s; here a real
call shows that the simulator behaves like the server and that the fixed client holds the call.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import numpy as np
import pytest

from rtvoice import errors
from rtvoice.rtc import compat
from rtvoice.simulator import Simulator
from rtvoice.simulator.audio import encode_opus_frames
from rtvoice.transports.webrtc import WebRTCTransport

from .sim_client import BareClient

SILENCE = encode_opus_frames(np.zeros(960, dtype=np.int16))[0]


async def until(cond: Callable[[], bool], timeout: float) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


@pytest.mark.slow
def test_ice_lite_call_holds_45s_with_audio_both_ways() -> None:
    async def main() -> None:
        async with Simulator(ice_lite=True) as sim:
            client = BareClient()  # its microphone track sends 20 ms frames all along
            try:
                await client.connect(sim.base_url, sim.api_key)
                assert "a=ice-lite" in client.answer.splitlines()
                call = await sim.wait_for_call()
                assert call.pacer is not None
                call.pacer.play([SILENCE] * 50 * 60)  # 60 s of downlink audio
                loop = asyncio.get_running_loop()
                start = loop.time()
                await asyncio.sleep(35)
                # The last 10 s: both directions keep moving, sampled every 2 s.
                samples = []
                for _ in range(6):
                    samples.append((len(client.rtp.packets), len(call.received_packets)))
                    await asyncio.sleep(2)
                assert loop.time() - start >= 45
                for (down0, up0), (down1, up1) in itertools.pairwise(samples):
                    assert down1 > down0, f"client stopped receiving RTP: {samples}"
                    assert up1 > up0, f"simulator stopped receiving RTP: {samples}"
                assert client.pc.connectionState == "connected"
                assert not call.closed
                # The client's consent checks (one every 4-6 s) carried USE-CANDIDATE and were
                # answered; the simulator had nothing to ignore.
                assert call.stun.passed_after_nomination >= 6, call.stun
                assert call.stun.ignored == 0, call.stun
            finally:
                await client.close()

    asyncio.run(main())


@pytest.mark.parametrize("fix", [True, False], ids=["consent_fix", "aioice_consent"])
def test_ice_lite_simulator_ignores_consent_checks_without_use_candidate(fix: bool) -> None:
    async def main() -> None:
        async with Simulator(ice_lite=True) as sim:
            client = BareClient()
            compat.set_consent_fix(client.pc, fix)
            try:
                await client.connect(sim.base_url, sim.api_key)
                call = await sim.wait_for_call()
                # The first consent check goes out 4-6 s after ICE completes.
                await until(lambda: call.stun.passed_after_nomination + call.stun.ignored > 0, 15)
                if fix:
                    assert call.stun.ignored == 0
                    assert call.stun.passed_after_nomination >= 1
                else:
                    assert call.stun.ignored >= 1
                    assert call.stun.passed_after_nomination == 0
            finally:
                await client.close()

    asyncio.run(main())


def test_block_ice_answers_the_offer_but_a_connect_times_out() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            sim.faults.block_ice = True
            transport = WebRTCTransport(base_url=sim.base_url, connect_timeout_s=2.0)
            try:
                with pytest.raises(errors.RtvoiceError, match=r"timed out.*ICE"):
                    await transport.connect(key=sim.mint_key())
            finally:
                await transport.close()
            call = sim.last_call
            assert call is not None  # the SDP POST got its answer
            assert not call.connected.is_set()
            assert call.stun.ignored > 0
            assert call.stun.passed == 0
            assert any(r.path.endswith("/realtime/calls") and r.status == 201 for r in sim.requests)

    asyncio.run(main())
