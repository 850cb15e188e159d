"""Loopback-only ICE for aiortc: the one module that reaches into aioice's internals.

aioice gathers a host candidate on every interface except 127.0.0.1 (``aioice.ice.
get_host_addresses`` skips it), so two aiortc peers on one machine would talk over the machine's
external address, and aiortc's default configuration would also query a public STUN server. When
the server is on loopback (the simulator, every test), both peers must gather and use 127.0.0.1
only. Usage::

    pc = RTCPeerConnection(loopback_configuration())
    ...
    with loopback_only():
        await pc.setLocalDescription(offer)   # gathers 127.0.0.1 only
    assert_loopback_sdp(pc.localDescription.sdp)

:func:`loopback_only` is scoped by a :class:`contextvars.ContextVar`: only gathering that runs in
the ``with`` block's context (including tasks it starts) is affected; other peer connections in
the process keep aioice's normal behaviour. The hook is installed into ``aioice.ice`` on first use
and delegates to the original function outside the scope.

Supported versions are pinned in :data:`rtvoice.rtc.compat.SUPPORTED` (re-exported here);
:func:`check_supported` raises on others, and tests/unit/test_loopback.py and test_compat.py fail
if an upgrade changes the internals this relies on.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from rtvoice.rtc import compat
from rtvoice.rtc.compat import SUPPORTED, CompatError
from rtvoice.rtc.compat import version_tuple as _version_tuple  # noqa: F401 (older name)

__all__ = [
    "SUPPORTED",
    "LoopbackError",
    "assert_loopback_sdp",
    "check_supported",
    "filter_candidates",
    "is_loopback_host",
    "is_loopback_url",
    "loopback_configuration",
    "loopback_only",
    "nominated_pairs",
    "restrict_to_loopback",
    "sdp_candidate_addresses",
]

_LOOPBACK_V4 = "127.0.0.1"
_active: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rtvoice_loopback_only", default=False
)
_install_lock = threading.Lock()
_original: Callable[..., list[str]] | None = None


class LoopbackError(CompatError):
    """The installed aiortc/aioice cannot be restricted to loopback, or a description carries a
    candidate that is not on loopback."""


def check_supported() -> None:
    """Raise :class:`LoopbackError` unless the installed aiortc and aioice are supported and the
    internals rtvoice.rtc relies on (``aioice.ice.get_host_addresses`` among them) are where it
    expects (:func:`rtvoice.rtc.compat.check_supported`)."""
    try:
        compat.check_supported()
    except CompatError as exc:
        raise LoopbackError(str(exc)) from exc


def _hooked_get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _active.get():
        return [_LOOPBACK_V4] if use_ipv4 else []
    assert _original is not None
    return _original(use_ipv4, use_ipv6)


def _install() -> None:
    """Put the hook into ``aioice.ice`` (again, if something such as a test's monkeypatch
    replaced it since)."""
    global _original
    with _install_lock:
        import aioice.ice

        current = aioice.ice.get_host_addresses
        if current is _hooked_get_host_addresses:
            return
        if _original is None:
            check_supported()
            _original = current
        elif getattr(current, "__module__", None) == "aioice.ice":
            _original = current
        aioice.ice.get_host_addresses = _hooked_get_host_addresses


@contextmanager
def loopback_only() -> Iterator[None]:
    """Within this block (and tasks started from it), ICE gathering yields 127.0.0.1 only."""
    _install()
    token = _active.set(True)
    try:
        yield
    finally:
        _active.reset(token)


def restrict_to_loopback(pc: Any) -> Any:
    """Make every ``setLocalDescription`` of this aiortc ``RTCPeerConnection`` gather 127.0.0.1
    only (aiortc gathers inside ``setLocalDescription``). Returns ``pc``. Create ``pc`` with
    :func:`loopback_configuration` (or another config without STUN/TURN servers) as well."""
    _install()
    if getattr(pc, "_rtvoice_loopback", False):
        return pc
    original = pc.setLocalDescription

    async def set_local_description(description: Any = None) -> None:
        with loopback_only():
            await original(description)

    pc.setLocalDescription = set_local_description
    pc._rtvoice_loopback = True
    return pc


def loopback_configuration() -> Any:
    """An ``RTCConfiguration`` with no ICE servers: aiortc's default adds a public STUN server,
    which is unreachable here and would put non-loopback traffic on the wire."""
    from aiortc import RTCConfiguration

    return RTCConfiguration(iceServers=[])


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (brackets allowed)."""
    if not host:
        return False
    h = host.strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """True if the URL's host is on loopback (e.g. the simulator's ``base_url``)."""
    return is_loopback_host(urlsplit(url).hostname)


_CANDIDATE_RE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ \S+", re.IGNORECASE)


def sdp_candidate_addresses(sdp: str) -> list[str]:
    """The connection address of every ``a=candidate`` line of ``sdp``, in order."""
    out = []
    for line in sdp.splitlines():
        m = _CANDIDATE_RE.match(line.strip())
        if m:
            out.append(m.group(1))
    return out


def filter_candidates(sdp: str, keep: Callable[[str], bool] = is_loopback_host) -> str:
    """``sdp`` without the ``a=candidate`` lines whose address fails ``keep``. The simulator
    applies this to offers so that it never sends a connectivity check off loopback."""
    lines = sdp.splitlines(keepends=True)
    out = []
    for line in lines:
        m = _CANDIDATE_RE.match(line.strip())
        if m and not keep(m.group(1)):
            continue
        out.append(line)
    return "".join(out)


def assert_loopback_sdp(sdp: str) -> None:
    """Raise :class:`LoopbackError` if ``sdp`` has no candidate or any candidate off loopback."""
    addresses = sdp_candidate_addresses(sdp)
    if not addresses:
        raise LoopbackError("the description carries no ICE candidate")
    bad = [a for a in addresses if not is_loopback_host(a)]
    if bad:
        raise LoopbackError(f"non-loopback ICE candidates in the description: {bad}")


def nominated_pairs(pc: Any) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """``(local, remote)`` address of the nominated ICE pair of every ICE transport of ``pc``
    (aiortc ``RTCPeerConnection``), so a caller can prove the media path is on loopback."""
    transports = []
    for t in pc.getTransceivers():
        transports.append(t.receiver.transport.transport)
    if pc.sctp is not None:
        transports.append(pc.sctp.transport.transport)
    pairs: list[tuple[tuple[str, int], tuple[str, int]]] = []
    seen: set[int] = set()
    for ice in transports:
        conn = getattr(ice, "_connection", None)
        nominated = getattr(conn, "_nominated", None)
        if conn is None or not isinstance(nominated, dict):
            raise LoopbackError("cannot inspect the ICE connection of this aiortc version")
        if id(conn) in seen:
            continue
        seen.add(id(conn))
        for pair in nominated.values():
            local = (pair.local_candidate.host, pair.local_candidate.port)
            remote = (pair.remote_candidate.host, pair.remote_candidate.port)
            pairs.append((local, remote))
    return pairs
