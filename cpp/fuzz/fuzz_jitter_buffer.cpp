// Fuzzes rtvoice::JitterBuffer with arbitrary packet streams: sequence numbers, timestamps,
// payloads (L16 or Opus bytes, valid or not), arrival times, pull times, flush() and reset().
// Contracts checked: construction rejects bad configurations with std::invalid_argument only;
// every pull writes exactly frame_samples() finite samples per channel and nothing past them;
// samples_played counts every pulled sample; buffered packets never exceed the capacity; the
// insert results are counted in the statistics.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

#include "fuzz_input.hpp"
#include "rtvoice/audio_decoder.hpp"
#include "rtvoice/jitter_buffer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  rtvoice::fuzz::Input in(data, size);
  const std::uint8_t codec = in.u8();
  rtvoice::JitterBufferConfig config;
  config.frame_ms = (in.u8() & 1) != 0 ? 20 : 10;
  config.min_delay_ms = in.u8() % 120;
  config.max_delay_ms = config.min_delay_ms + in.u16() % 1000;
  config.start_delay_ms = in.u16() % 600;
  config.capacity_packets = 2 + in.u8() % 64;
  config.max_payload_bytes = 1 + in.u16() % 2000;
  config.fec = (in.u8() & 1) != 0;

  std::optional<rtvoice::JitterBuffer> jb;
  try {
    const int rate_hz = (codec & 1) != 0 ? 48000 : 16000;
    const int channels = (codec & 2) != 0 ? 2 : 1;
    auto decoder = (codec & 4) != 0 ? rtvoice::make_opus_decoder(rate_hz, channels)
                                    : rtvoice::make_l16_decoder(rate_hz, channels);
    jb.emplace(std::move(decoder), config);
  } catch (const std::invalid_argument&) {
    return 0;  // a rejected configuration
  }

  const std::size_t frame_values =
      static_cast<std::size_t>(jb->frame_samples()) * static_cast<std::size_t>(jb->channels());
  constexpr std::size_t kGuard = 32;
  constexpr float kGuardValue = 1234.5f;
  std::vector<float> out(frame_values + kGuard);
  std::int64_t now_ns = 1'000'000'000;
  std::uint16_t seq = in.u16();
  std::uint32_t ts = in.u32();
  std::uint64_t pulls = 0;

  while (!in.empty()) {
    const std::uint8_t op = in.u8();
    switch (op % 8) {
      case 0:
      case 1:
      case 2: {  // a packet: next in order, or with arbitrary jumps in seq / ts
        if ((op & 0x10) != 0) seq = static_cast<std::uint16_t>(seq + in.u8() - 128);
        if ((op & 0x20) != 0) ts += in.u32();
        std::size_t bytes = 0;
        const std::uint8_t* payload = in.bytes(in.u16() % 2048, bytes);
        const std::int64_t arrival_ns = now_ns - static_cast<std::int64_t>(in.u16()) * 100'000;
        const auto before = jb->stats();
        const auto result = jb->insert(seq, ts, bytes == 0 ? nullptr : payload, bytes, arrival_ns);
        const auto after = jb->stats();
        if (result == rtvoice::InsertResult::Duplicate) {
          RTVOICE_FUZZ_CHECK(after.packets_duplicated == before.packets_duplicated + 1);
        } else if (result == rtvoice::InsertResult::Late) {
          // A packet older than everything in a full buffer is also reported Late, but counted
          // as discarded (the overflow drop).
          RTVOICE_FUZZ_CHECK(after.packets_late + after.packets_discarded ==
                             before.packets_late + before.packets_discarded + 1);
        } else if (result == rtvoice::InsertResult::Invalid) {
          RTVOICE_FUZZ_CHECK(after.packets_invalid == before.packets_invalid + 1);
        } else if (result == rtvoice::InsertResult::Oversized) {
          RTVOICE_FUZZ_CHECK(after.packets_oversized == before.packets_oversized + 1);
        }
        seq = static_cast<std::uint16_t>(seq + 1);
        ts += static_cast<std::uint32_t>(48 * config.frame_ms);
        break;
      }
      case 3:
      case 4:
      case 5: {  // pulls, on time or with wake-up jitter
        const int count = 1 + in.u8() % 8;
        for (int i = 0; i < count; ++i) {
          for (std::size_t g = 0; g < kGuard; ++g) out[frame_values + g] = kGuardValue;
          now_ns += static_cast<std::int64_t>(config.frame_ms) * 1'000'000 +
                    (static_cast<std::int64_t>(in.u8()) - 128) * 50'000;
          jb->pull(now_ns, out.data());
          ++pulls;
          for (std::size_t k = 0; k < frame_values; ++k) RTVOICE_FUZZ_CHECK(std::isfinite(out[k]));
          for (std::size_t g = 0; g < kGuard; ++g) {
            RTVOICE_FUZZ_CHECK(out[frame_values + g] == kGuardValue);
          }
        }
        break;
      }
      case 6:
        now_ns += static_cast<std::int64_t>(in.u16()) * 1'000'000;  // a stall
        break;
      default:
        if ((op & 0x10) != 0) {
          jb->reset();
        } else {
          jb->flush();
        }
        break;
    }
    const auto stats = jb->stats();
    RTVOICE_FUZZ_CHECK(stats.samples_played ==
                       pulls * static_cast<std::uint64_t>(jb->frame_samples()));
    RTVOICE_FUZZ_CHECK(stats.buffered_packets <=
                       static_cast<std::uint32_t>(config.capacity_packets));
  }
  return 0;
}
