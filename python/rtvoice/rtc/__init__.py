"""WebRTC helpers shared by the client transport and the simulator."""
