// Uplink::pop_due() and finish() on the network thread while the capture thread pushes in bursts.
// Both paths handle a frame the input ran short of: they must take a single snapshot of the
// capture ring's fill and read at most that much, even when the capture thread completes the
// frame (or pushes far more) between the check and the read. A second look at the ring there read
// up to the whole ring into a one-frame buffer: a heap overflow that ASan reports here in most
// runs of the unfixed code (partial_wait_ms = 0 sends every short frame at once, and bursts of
// many frames land in the window). Run under ASan/UBSan and TSan by the gates.
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "check.hpp"
#include "rtvoice/pipelines.hpp"

namespace {

void run(rtvoice::PipelineMode mode, bool use_finish) {
  rtvoice::UplinkConfig config;
  config.input_rate_hz = 24000;
  config.mode = mode;
  config.partial_wait_ms = 0;  // a short frame is padded and sent at once
  config.max_lag_ms = 60000;   // never re-anchor (each call is exactly due)
  config.ring_ms = 2000;
  rtvoice::Uplink uplink(config);
  const std::size_t frame = uplink.input_frame_samples();

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> pushes{0};
  std::thread capture([&] {
    // Bursts from a quarter frame up to 40 frames: the ring goes from short of a frame to far
    // more than one at random points of the network thread's work.
    std::vector<float> burst(frame * 40, 0.25f);
    std::size_t step = 0;
    while (!stop.load(std::memory_order_acquire)) {
      const std::size_t sizes[] = {frame / 4, frame - 1, frame * 40, 1, frame * 7};
      const std::size_t n = sizes[step++ % 5];
      uplink.push(burst.data(), n);
      pushes.fetch_add(1, std::memory_order_relaxed);
      if (uplink.pending_input_frames() > frame * 60) std::this_thread::yield();
    }
  });

  std::vector<std::uint8_t> packet(uplink.max_packet_bytes());
  rtvoice::UplinkPacketInfo info;
  std::uint64_t packets = 0;
  std::uint64_t expected_first = 0;
  bool have_first = false;
  std::int64_t now_ns = 0;
  while (pushes.load(std::memory_order_relaxed) < 4000 || packets < 2000) {
    bool got = false;
    if (use_finish && packets % 3 == 0) {
      uplink.finish();
      got = uplink.pop_packet(packet.data(), packet.size(), info);
    } else {
      now_ns += 20'000'000;
      got = uplink.pop_due(now_ns, packet.data(), packet.size(), info);
    }
    if (!got) continue;
    ++packets;
    RTVOICE_CHECK(info.bytes <= packet.size());
    // Packets are consecutive frames of the transport-rate stream, padded or not.
    if (have_first) RTVOICE_CHECK_EQ(info.first_sample, expected_first);
    expected_first = info.first_sample + uplink.frame_samples();
    have_first = true;
  }
  stop.store(true, std::memory_order_release);
  capture.join();
  const rtvoice::UplinkStats s = uplink.stats();
  RTVOICE_CHECK(s.packets >= packets);
  if (!use_finish) {
    RTVOICE_CHECK_EQ(s.input_frames_sent + s.padded_frames + s.silent_frames, packets);
  }
}

}  // namespace

int main() {
  // The window is a few instructions wide: repeat the cheap PCM runs to make a hit likely.
  for (int round = 0; round < 6; ++round) {
    run(rtvoice::PipelineMode::Pcm16, false);
    run(rtvoice::PipelineMode::Pcm16, true);
  }
  run(rtvoice::PipelineMode::Opus, false);
  return 0;
}
