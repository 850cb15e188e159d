// Fuzzes rtvoice::SpscRing (single-threaded) against a model queue: arbitrary capacities, channel
// counts and sequences of write / read / zero-copy regions / partial commits / discard. Contents,
// fill level and the overrun/underrun counters must match the model exactly.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "fuzz_input.hpp"
#include "rtvoice/spsc_ring.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  rtvoice::fuzz::Input in(data, size);
  const std::size_t capacity = std::size_t{1} << (1 + in.u8() % 12);
  const std::size_t ch = 1 + in.u8() % 4;
  rtvoice::SpscRing<std::int16_t> ring(capacity, ch);

  std::deque<std::int16_t> model;
  std::uint64_t written = 0, read = 0, overrun_frames = 0, overrun_events = 0;
  std::uint64_t underrun_frames = 0, underrun_events = 0;
  std::int16_t next_value = 0;
  std::vector<std::int16_t> buf;

  while (!in.empty()) {
    const int op = in.u8() % 5;
    const std::size_t frames = in.u16() % (2 * capacity + 3);
    if (op == 0) {  // copying write
      buf.resize(frames * ch);
      for (auto& v : buf) v = next_value++;
      const std::size_t n = ring.write(buf.data(), frames);
      RTVOICE_FUZZ_CHECK(n == std::min(frames, capacity - model.size() / ch));
      model.insert(model.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n * ch));
      written += n;
      if (n < frames) {
        overrun_frames += frames - n;
        ++overrun_events;
      }
    } else if (op == 1) {  // copying read
      buf.assign(frames * ch, 0);
      const std::size_t n = ring.read(buf.data(), frames);
      RTVOICE_FUZZ_CHECK(n == std::min(frames, model.size() / ch));
      for (std::size_t i = 0; i < n * ch; ++i) {
        RTVOICE_FUZZ_CHECK(buf[i] == model.front());
        model.pop_front();
      }
      read += n;
      if (n < frames) {
        underrun_frames += frames - n;
        ++underrun_events;
      }
    } else if (op == 2) {  // zero-copy write, committing a prefix of the span
      auto span = ring.write_regions(frames);
      RTVOICE_FUZZ_CHECK(span.frames() == std::min(frames, capacity - model.size() / ch));
      const std::size_t commit = span.frames() == 0 ? 0 : in.u16() % (span.frames() + 1);
      for (std::size_t i = 0; i < commit; ++i) {
        std::int16_t* frame = i < span.first_frames ? span.first + i * ch
                                                    : span.second + (i - span.first_frames) * ch;
        for (std::size_t c = 0; c < ch; ++c) {
          frame[c] = next_value;
          model.push_back(next_value++);
        }
      }
      ring.commit_write(commit);
      written += commit;
    } else if (op == 3) {  // zero-copy read, releasing a prefix of the span
      auto span = ring.read_regions(frames);
      RTVOICE_FUZZ_CHECK(span.frames() == std::min(frames, model.size() / ch));
      const std::size_t commit = span.frames() == 0 ? 0 : in.u16() % (span.frames() + 1);
      for (std::size_t i = 0; i < span.frames(); ++i) {
        const std::int16_t* frame = i < span.first_frames
                                        ? span.first + i * ch
                                        : span.second + (i - span.first_frames) * ch;
        for (std::size_t c = 0; c < ch; ++c) {
          RTVOICE_FUZZ_CHECK(frame[c] == model[i * ch + c]);
        }
      }
      model.erase(model.begin(), model.begin() + static_cast<std::ptrdiff_t>(commit * ch));
      ring.commit_read(commit);
      read += commit;
    } else {
      const std::size_t n = ring.discard(frames);
      RTVOICE_FUZZ_CHECK(n == std::min(frames, model.size() / ch));
      model.erase(model.begin(), model.begin() + static_cast<std::ptrdiff_t>(n * ch));
      read += n;
    }
    RTVOICE_FUZZ_CHECK(ring.available_frames() * ch == model.size());
    RTVOICE_FUZZ_CHECK(ring.free_frames() == capacity - model.size() / ch);
    RTVOICE_FUZZ_CHECK(ring.frames_written() == written);
    RTVOICE_FUZZ_CHECK(ring.frames_read() == read);
    RTVOICE_FUZZ_CHECK(ring.overrun_frames() == overrun_frames);
    RTVOICE_FUZZ_CHECK(ring.overrun_events() == overrun_events);
    RTVOICE_FUZZ_CHECK(ring.underrun_frames() == underrun_frames);
    RTVOICE_FUZZ_CHECK(ring.underrun_events() == underrun_events);
  }
  return 0;
}
