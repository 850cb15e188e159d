// Regression: an empty chunk passed as (nullptr, 0), as std::vector::data() gives for an empty
// vector, must be a no-op. SpscRing::write/read and Framer::push used to hand the null pointer to
// memcpy (undefined behaviour, reported by UBSan under the fuzz targets; crash inputs in
// fuzz/regressions/spsc_ring and fuzz/regressions/framer). Run under ASan+UBSan by the asan gate.
#include <cstddef>
#include <cstdint>

#include "check.hpp"
#include "rtvoice/framer.hpp"
#include "rtvoice/spsc_ring.hpp"

int main() {
  rtvoice::SpscRing<float> ring(8, 2);
  RTVOICE_CHECK_EQ(ring.write(nullptr, 0), 0u);
  RTVOICE_CHECK_EQ(ring.read(nullptr, 0), 0u);
  const float frames[4] = {1, 2, 3, 4};
  RTVOICE_CHECK_EQ(ring.write(frames, 2), 2u);
  RTVOICE_CHECK_EQ(ring.write(nullptr, 0), 0u);
  RTVOICE_CHECK_EQ(ring.read(nullptr, 0), 0u);
  RTVOICE_CHECK_EQ(ring.available_frames(), 2u);
  RTVOICE_CHECK_EQ(ring.overrun_events() + ring.underrun_events(), 0u);

  // 1 ms at 8 kHz: 8-frame frames. Three pending frames, then an empty push.
  rtvoice::Framer<std::int16_t> framer(8000, 1, 1);
  const std::int16_t samples[3] = {7, 8, 9};
  std::size_t calls = 0;
  auto count = [&](const std::int16_t*, std::uint64_t) { ++calls; };
  RTVOICE_CHECK_EQ(framer.push(nullptr, 0, count), 0u);
  RTVOICE_CHECK_EQ(framer.push(samples, 3, count), 0u);
  RTVOICE_CHECK_EQ(framer.push(nullptr, 0, count), 0u);
  RTVOICE_CHECK_EQ(framer.pending_frames(), 3u);
  RTVOICE_CHECK_EQ(calls, 0u);
  return 0;
}
