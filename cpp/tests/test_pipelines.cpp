// Uplink and Downlink driven from three threads, as in a session: capture pushes PCM, the
// network thread moves packets from the Uplink into the Downlink, the playout thread pulls.
// A fourth thread reads the published statistics. Run under ThreadSanitizer by the tsan gate:
// every queue must have exactly one producer and one consumer, with no data race.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#include "check.hpp"
#include "rtvoice/pipelines.hpp"

int main() {
  constexpr int kRate = 16000;
  constexpr int kFrames = 150;  // 3 s of 20 ms frames
  constexpr std::size_t kChunk = 160;

  rtvoice::UplinkConfig up_config;
  up_config.input_rate_hz = kRate;
  rtvoice::Uplink uplink(up_config);
  rtvoice::DownlinkConfig down_config;
  down_config.output_rate_hz = kRate;
  rtvoice::Downlink downlink(down_config);

  std::vector<float> signal(static_cast<std::size_t>(kRate) * 3);
  for (std::size_t i = 0; i < signal.size(); ++i) {
    signal[i] = 0.3f * static_cast<float>(
                           std::sin(2.0 * 3.14159265 * 440.0 * static_cast<double>(i) / kRate));
  }

  std::atomic<bool> capture_done{false};
  std::atomic<bool> network_done{false};
  std::atomic<int> packets_sent{0};

  std::thread capture([&] {
    for (std::size_t pos = 0; pos < signal.size(); pos += kChunk) {
      std::size_t offered = 0;
      while (offered < kChunk) {
        offered += uplink.push(signal.data() + pos + offered, kChunk - offered);
        if (offered < kChunk) std::this_thread::yield();
      }
    }
    capture_done.store(true, std::memory_order_release);
  });

  std::thread network([&] {
    std::vector<std::uint8_t> packet(uplink.max_packet_bytes());
    rtvoice::UplinkPacketInfo info;
    int expected_seq = 0;
    for (;;) {
      const bool finished = capture_done.load(std::memory_order_acquire);
      while (uplink.pop_packet(packet.data(), packet.size(), info)) {
        RTVOICE_CHECK_EQ(info.seq, expected_seq);
        RTVOICE_CHECK_EQ(info.timestamp, static_cast<std::uint32_t>(expected_seq) * 960u);
        ++expected_seq;
        const std::int64_t arrival_ns = static_cast<std::int64_t>(info.timestamp) / 48 * 1000000;
        while (
            !downlink.push_rtp(info.seq, info.timestamp, packet.data(), info.bytes, arrival_ns)) {
          std::this_thread::yield();  // the playout side drains the queue
        }
        packets_sent.fetch_add(1, std::memory_order_relaxed);
      }
      if (finished) break;
      std::this_thread::yield();
    }
    network_done.store(true, std::memory_order_release);
  });

  std::thread playout([&] {
    std::vector<float> out(320);
    std::int64_t now_ns = 0;
    std::uint64_t pulls = 0;
    while (!network_done.load(std::memory_order_acquire) || pulls < kFrames + 20) {
      downlink.pull(out.data(), out.size(), now_ns);
      now_ns += 20000000;
      ++pulls;
      for (float v : out) RTVOICE_CHECK(std::isfinite(v));
    }
  });

  std::thread observer([&] {
    while (!network_done.load(std::memory_order_acquire)) {
      const rtvoice::DownlinkStats s = downlink.stats();
      RTVOICE_CHECK(s.samples_pulled % 320 == 0);
      RTVOICE_CHECK(uplink.stats().packets >= s.jitter.packets_received);
      std::this_thread::yield();
    }
  });

  capture.join();
  network.join();
  playout.join();
  observer.join();
  // The playout thread has ended, so this thread may take over its side: drain what is queued.
  std::vector<float> out(320);
  downlink.pull(out.data(), out.size(), 0);

  RTVOICE_CHECK_EQ(packets_sent.load(), kFrames);
  const rtvoice::DownlinkStats s = downlink.stats();
  RTVOICE_CHECK_EQ(s.jitter.packets_received, static_cast<std::uint64_t>(kFrames));
  RTVOICE_CHECK_EQ(s.packets_dropped_queue_full, 0u);
  RTVOICE_CHECK(s.media_samples_played > 0);
  RTVOICE_CHECK_EQ(uplink.stats().frames_pushed, static_cast<std::uint64_t>(kRate) * 3);
  return 0;
}
