// Two-thread stress of SpscRing: a producer and a consumer thread with varying chunk sizes, over
// both the copying (write/read) and the zero-copy (write_regions/read_regions) APIs. Every frame
// must arrive exactly once and in order; with a dropping producer, the counters must account for
// every offered frame. An observer thread reads the any-thread counters meanwhile. Meant to run
// under ThreadSanitizer (scripts/gates/tsan.sh) as well as plainly.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "check.hpp"
#include "rtvoice/spsc_ring.hpp"

namespace {

using rtvoice::SpscRing;
using Sample = std::uint32_t;

constexpr std::size_t kChannels = 2;
// Frames per run: a tiny ring hands over nearly every frame separately, so it gets fewer (the
// run time must stay short on a loaded machine under TSan).
std::uint64_t frames_for(std::size_t capacity) { return capacity < 16 ? 20000 : 200000; }

// Deterministic chunk sizes; each thread owns its own generator.
class XorShift {
 public:
  explicit XorShift(std::uint32_t seed) : s_(seed) {}
  std::size_t next(std::size_t max_inclusive) {
    s_ ^= s_ << 13;
    s_ ^= s_ >> 17;
    s_ ^= s_ << 5;
    return 1 + s_ % max_inclusive;
  }

 private:
  std::uint32_t s_;
};

// Frame k holds (k, ~k): a torn or misplaced frame cannot pass the check.
void fill(Sample* dst, std::uint64_t first, std::size_t frames) {
  for (std::size_t i = 0; i < frames; ++i) {
    const auto k = static_cast<Sample>(first + i);
    dst[i * kChannels] = k;
    dst[i * kChannels + 1] = ~k;
  }
}

enum class Api { Copy, ZeroCopy };

// Lossless: the producer retries what did not fit, so the consumer sees 0, 1, 2, ... exactly.
void lossless(Api api, std::size_t capacity) {
  SpscRing<Sample> ring(capacity, kChannels);
  const std::uint64_t total_frames = frames_for(capacity);
  std::atomic<bool> done{false};
  std::uint64_t refused_frames = 0;  // frames write() did not take (retried; counted as overrun)

  std::thread producer([&] {
    XorShift rng(1);
    std::vector<Sample> chunk((capacity + 16) * kChannels);
    std::uint64_t next = 0;
    while (next < total_frames) {
      const std::size_t want = static_cast<std::size_t>(
          std::min<std::uint64_t>(rng.next(capacity + 7), total_frames - next));
      std::size_t n = 0;
      if (api == Api::Copy) {
        fill(chunk.data(), next, want);
        n = ring.write(chunk.data(), want);
        refused_frames += want - n;
      } else {
        auto span = ring.write_regions(want);
        fill(span.first, next, span.first_frames);
        fill(span.second, next + span.first_frames, span.second_frames);
        n = span.frames();
        ring.commit_write(n);
      }
      next += n;
      if (n == 0) std::this_thread::yield();
    }
  });

  std::thread observer([&] {
    std::uint64_t last_read = 0;
    while (!done.load(std::memory_order_acquire)) {
      // r_before <= w bounds reads by writes; w - r_after bounds the fill level (the indices move
      // between the loads, so each bound needs its own load order).
      const std::uint64_t r_before = ring.frames_read();
      const std::uint64_t w = ring.frames_written();
      const std::uint64_t r_after = ring.frames_read();
      RTVOICE_CHECK(r_before >= last_read);
      RTVOICE_CHECK(r_after >= r_before);
      RTVOICE_CHECK(w >= r_before);
      RTVOICE_CHECK(r_after > w || w - r_after <= capacity);
      last_read = r_after;
      std::this_thread::yield();
    }
  });

  XorShift rng(2);
  std::vector<Sample> out((capacity + 16) * kChannels);
  std::uint64_t expect = 0;
  auto check_frames = [&](const Sample* p, std::size_t frames) {
    for (std::size_t i = 0; i < frames; ++i, ++expect) {
      RTVOICE_CHECK_EQ(p[i * kChannels], static_cast<Sample>(expect));
      RTVOICE_CHECK_EQ(p[i * kChannels + 1], static_cast<Sample>(~static_cast<Sample>(expect)));
    }
  };
  while (expect < total_frames) {
    const std::size_t want = rng.next(capacity + 11);
    std::size_t n = 0;
    if (api == Api::Copy) {
      n = ring.read(out.data(), want);
      check_frames(out.data(), n);
    } else {
      auto span = ring.read_regions(want);
      check_frames(span.first, span.first_frames);
      check_frames(span.second, span.second_frames);
      n = span.frames();
      ring.commit_read(n);
    }
    if (n == 0) std::this_thread::yield();
  }
  producer.join();
  done.store(true, std::memory_order_release);
  observer.join();

  RTVOICE_CHECK_EQ(expect, total_frames);
  RTVOICE_CHECK_EQ(ring.frames_written(), total_frames);
  RTVOICE_CHECK_EQ(ring.frames_read(), total_frames);
  RTVOICE_CHECK_EQ(ring.available_frames(), 0u);
  RTVOICE_CHECK_EQ(ring.overrun_frames(), refused_frames);
}

// Dropping producer: whatever does not fit is lost and counted. The consumer must still see a
// strictly increasing sequence, and written + dropped must equal offered.
void dropping(std::size_t capacity) {
  SpscRing<Sample> ring(capacity, kChannels);
  const std::uint64_t total_frames = frames_for(capacity);
  std::atomic<bool> producer_done{false};
  std::uint64_t offered = 0;

  std::thread producer([&] {
    XorShift rng(3);
    std::vector<Sample> chunk((capacity + 16) * kChannels);
    std::uint64_t next = 0;  // index of the next frame offered
    while (next < total_frames) {
      const std::size_t want = static_cast<std::size_t>(
          std::min<std::uint64_t>(rng.next(capacity / 2), total_frames - next));
      fill(chunk.data(), next, want);
      const std::size_t n = ring.write(chunk.data(), want);
      // Written frames keep their indices; the dropped tail of the chunk is skipped.
      next += want;
      offered += want;
      if (n < want) std::this_thread::yield();
    }
    producer_done.store(true, std::memory_order_release);
  });

  XorShift rng(4);
  std::vector<Sample> out(capacity * kChannels);
  std::uint64_t received = 0;
  std::int64_t last = -1;
  for (;;) {
    const bool finished = producer_done.load(std::memory_order_acquire);
    const std::size_t n = ring.read(out.data(), rng.next(capacity));
    for (std::size_t i = 0; i < n; ++i) {
      const Sample k = out[i * kChannels];
      RTVOICE_CHECK_EQ(out[i * kChannels + 1], static_cast<Sample>(~k));
      RTVOICE_CHECK(static_cast<std::int64_t>(k) > last);
      last = static_cast<std::int64_t>(k);
    }
    received += n;
    if (finished && ring.available_frames() == 0) break;
    if (n == 0) std::this_thread::yield();
  }
  producer.join();

  RTVOICE_CHECK_EQ(offered, total_frames);
  RTVOICE_CHECK_EQ(ring.frames_written() + ring.overrun_frames(), total_frames);
  RTVOICE_CHECK_EQ(received, ring.frames_written());
  RTVOICE_CHECK(ring.overrun_events() <= ring.overrun_frames());
}

}  // namespace

int main() {
  for (const std::size_t capacity : {std::size_t{2}, std::size_t{64}, std::size_t{1024}}) {
    lossless(Api::Copy, capacity);
    lossless(Api::ZeroCopy, capacity);
    dropping(capacity);
  }
  std::printf("spsc_ring: 9 runs ok\n");
  return 0;
}
