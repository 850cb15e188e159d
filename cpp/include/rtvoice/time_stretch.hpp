// Pitch-synchronous time stretching of a signal that is about to be played (WSOLA / NetEq
// accelerate and preemptive expand): one pitch period is removed or repeated at the play head,
// with a cross-fade, so the tempo changes for a few milliseconds and nothing is dropped or
// inserted as a whole frame.
//
// The signal lives in a caller-owned interleaved float buffer: history (already played, read
// only) before `head`, the unplayed samples from `head` to `end`. Owned by one thread; the
// scratch space is allocated in the constructor.
#pragma once

#include <cstddef>
#include <vector>

namespace rtvoice {

class TimeStretcher {
 public:
  TimeStretcher(int sample_rate_hz, int channels);

  // Played samples per channel that must precede the head for expand() and the period search.
  std::size_t history_samples() const { return history_samples_; }
  // Longest period that is removed or added, samples per channel.
  std::size_t max_period_samples() const { return max_period_; }
  std::size_t min_period_samples() const { return min_period_; }

  // Removes one period of at most max_remove samples starting at the head. `buf` holds `end`
  // samples per channel with the head at `head` (head >= history_samples()). The unplayed
  // samples after the removed period move down. Returns the samples removed (0 when the signal
  // is neither periodic enough nor quiet).
  std::size_t accelerate(float* buf, std::size_t head, std::size_t end, std::size_t max_remove);

  // Repeats one period of at most max_add samples at the head; buf must have room for
  // end + max_add samples. Returns the samples added (0 when not periodic enough nor quiet).
  std::size_t expand(float* buf, std::size_t head, std::size_t end, std::size_t capacity,
                     std::size_t max_add);

  // Correlation a period must reach to be cut or repeated in non-quiet audio.
  static constexpr float kMinCorrelation = 0.9f;

 private:
  // Best lag in [min_period_, max_lag] at which the signal around the head repeats. Writes its
  // normalized correlation and whether the audio there is quiet (then any lag will do and
  // max_lag is returned).
  std::size_t find_period(const float* buf, std::size_t head, std::size_t unplayed,
                          std::size_t max_lag, bool expand_mode, float* correlation, bool* quiet);

  int sample_rate_hz_;
  std::size_t channels_;
  std::size_t decimation_;
  std::size_t min_period_;
  std::size_t max_period_;
  std::size_t corr_len_;
  std::size_t history_samples_;
  std::vector<float> mono_;  // mono mix around the head
  std::vector<float> low_;   // the same decimated to about 4 kHz
};

}  // namespace rtvoice
