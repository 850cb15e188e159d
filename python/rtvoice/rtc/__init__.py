"""WebRTC helpers shared by the client transport and the simulator.

Importing this package installs the ICE consent fix for ICE-lite peers into aioice
(:func:`rtvoice.rtc.compat.install_consent_fix`), so it covers every peer connection in the
process.
"""

from rtvoice.rtc import compat as _compat

_compat._install_at_import()
