// Fuzzes rtvoice::Framer with arbitrary rates, frame durations, channel counts and chunkings:
// the frames handed out must be exactly the pushed samples, cut at multiples of frame_frames,
// each tagged with its first sample's stream index, and flush() must zero-pad the rest.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <vector>

#include "fuzz_input.hpp"
#include "rtvoice/framer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  rtvoice::fuzz::Input in(data, size);
  const int rate_hz = static_cast<int>(in.u32() % 400000);
  const int frame_ms = in.u16() % 1100;
  const int channels = in.u8() % 70;
  // Keep each run small: skip configurations whose frame buffer would exceed 4 Mi samples.
  if (static_cast<long long>(rate_hz) * frame_ms / 1000 * channels > (1 << 22)) return 0;
  std::optional<rtvoice::Framer<float>> framer;
  try {
    framer.emplace(rate_hz, frame_ms, channels);
  } catch (const std::invalid_argument&) {
    return 0;  // rejected configuration: the constructor's contract
  }
  const std::size_t ch = static_cast<std::size_t>(channels);
  const std::size_t frame_frames = framer->frame_frames();
  RTVOICE_FUZZ_CHECK(frame_frames * 1000 ==
                     static_cast<std::size_t>(rate_hz) * static_cast<std::size_t>(frame_ms));

  // Sample values count up (exact in float below 2^24), so any misplaced sample shows.
  std::uint32_t next_value = 0;
  std::uint32_t expect_value = 0;  // value of the next sample a frame must start with
  std::uint64_t expect_index = 0;  // stream index of the next frame
  std::size_t pending = 0;         // frames pushed but not yet emitted (model)
  std::vector<float> chunk;

  while (!in.empty()) {
    const int op = in.u8() % 4;
    if (op == 0 || op == 1) {  // push a chunk (op 1: a long one)
      const std::size_t frames = op == 0 ? in.u8() : in.u16() % 20000;
      chunk.resize(frames * ch);
      for (float& v : chunk) v = static_cast<float>(next_value++ % (1u << 24));
      std::size_t seen = 0;
      const std::size_t emitted =
          // An empty chunk may come as a null pointer, as from an empty std::vector.
          framer->push(
              frames == 0 ? nullptr : chunk.data(), frames,
              [&](const float* frame, std::uint64_t start) {
                RTVOICE_FUZZ_CHECK(start == expect_index);
                for (std::size_t i = 0; i < frame_frames * ch; ++i) {
                  RTVOICE_FUZZ_CHECK(frame[i] == static_cast<float>(expect_value++ % (1u << 24)));
                }
                expect_index += frame_frames;
                ++seen;
              });
      RTVOICE_FUZZ_CHECK(emitted == seen);
      RTVOICE_FUZZ_CHECK(seen == (pending + frames) / frame_frames);
      pending = (pending + frames) % frame_frames;
    } else if (op == 2) {  // flush: the pending samples, then zeros
      const std::size_t had = pending;
      bool called = false;
      const bool flushed = framer->flush([&](const float* frame, std::uint64_t start) {
        called = true;
        RTVOICE_FUZZ_CHECK(start == expect_index);
        for (std::size_t i = 0; i < frame_frames * ch; ++i) {
          const float want = i < had * ch ? static_cast<float>(expect_value++ % (1u << 24)) : 0.0f;
          RTVOICE_FUZZ_CHECK(frame[i] == want);
        }
      });
      RTVOICE_FUZZ_CHECK(flushed == called);
      RTVOICE_FUZZ_CHECK(flushed == (had != 0));
      if (flushed) expect_index += frame_frames;
      pending = 0;
    } else {  // reset to an arbitrary index: pending samples are dropped
      const std::uint64_t start = in.u32();
      framer->reset(start);
      expect_value += static_cast<std::uint32_t>(pending * ch);
      expect_index = start;
      pending = 0;
    }
    RTVOICE_FUZZ_CHECK(framer->pending_frames() == pending);
    RTVOICE_FUZZ_CHECK(framer->next_frame_index() == expect_index);
  }
  return 0;
}
