#include "rtvoice/time_stretch.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace rtvoice {
namespace {

// The period search runs on a mono mix decimated to about 4 kHz (as NetEq does), then refines
// the lag at the full rate.
constexpr int kSearchRateHz = 4000;
// Periods from 2.5 ms (400 Hz) to 15 ms (67 Hz) cover speaking voices.
constexpr int kMinPeriodUs = 2500;
constexpr int kMaxPeriodUs = 15000;
// The correlation window runs from kLeadUs before the head to kCorrUs - kLeadUs after it.
constexpr int kCorrUs = 10000;
constexpr int kLeadUs = 5000;
// Mean square of the mono window below which audio counts as quiet (about -60 dBFS): any cut
// there is inaudible, periodic or not.
constexpr float kQuietPower = 1e-6f;

std::size_t us_to_samples(int rate_hz, int us) {
  return static_cast<std::size_t>(static_cast<long long>(rate_hz) * us / 1000000);
}

}  // namespace

TimeStretcher::TimeStretcher(int sample_rate_hz, int channels)
    : sample_rate_hz_(sample_rate_hz), channels_(static_cast<std::size_t>(channels)) {
  if (sample_rate_hz < 8000 || sample_rate_hz > 192000) {
    throw std::invalid_argument("TimeStretcher: sample rate must be 8000..192000 Hz");
  }
  if (channels < 1 || channels > 8) {
    throw std::invalid_argument("TimeStretcher: channels must be 1..8");
  }
  decimation_ = std::max<std::size_t>(1, static_cast<std::size_t>(sample_rate_hz / kSearchRateHz));
  min_period_ = us_to_samples(sample_rate_hz, kMinPeriodUs);
  max_period_ = us_to_samples(sample_rate_hz, kMaxPeriodUs);
  corr_len_ = us_to_samples(sample_rate_hz, kCorrUs);
  history_samples_ = max_period_ + us_to_samples(sample_rate_hz, kLeadUs);
  // The analysed span: history_samples_ before the head and as many after it.
  mono_.assign(2 * history_samples_, 0.0f);
  low_.assign(mono_.size() / decimation_, 0.0f);
}

namespace {

struct Corr {
  float xy = 0.0f;
  float xx = 0.0f;
  float yy = 0.0f;
  float normalized() const {
    const float den = std::sqrt(xx * yy);
    return den > 0.0f ? xy / den : 0.0f;
  }
};

// Products of two windows; four partial sums per term shorten the dependency chains.
Corr correlate(const float* a, const float* b, std::size_t len) {
  float xy[4] = {0, 0, 0, 0}, xx[4] = {0, 0, 0, 0}, yy[4] = {0, 0, 0, 0};
  std::size_t k = 0;
  for (; k + 4 <= len; k += 4) {
    for (std::size_t j = 0; j < 4; ++j) {
      xy[j] += a[k + j] * b[k + j];
      xx[j] += a[k + j] * a[k + j];
      yy[j] += b[k + j] * b[k + j];
    }
  }
  for (; k < len; ++k) {
    xy[0] += a[k] * b[k];
    xx[0] += a[k] * a[k];
    yy[0] += b[k] * b[k];
  }
  return Corr{(xy[0] + xy[1]) + (xy[2] + xy[3]), (xx[0] + xx[1]) + (xx[2] + xx[3]),
              (yy[0] + yy[1]) + (yy[2] + yy[3])};
}

}  // namespace

// Window A holds L samples from a_rel (relative to the head), window B the same samples shifted
// by +lag. Accelerate: a_rel = -lead (B lies in the future: the period after the head is cut).
// Expand: a_rel = -lead - lag (A lies in the history: the period before the head is repeated).
std::size_t TimeStretcher::find_period(const float* buf, std::size_t head, std::size_t unplayed,
                                       std::size_t max_lag, bool expand_mode, float* correlation,
                                       bool* quiet) {
  const std::size_t hist = history_samples_;
  const long lead = static_cast<long>(hist - max_period_);
  const std::size_t d = decimation_;
  // Mono mix of [head - hist, head + hist), zero past the unplayed end; index 0 is head - hist.
  const std::size_t span = mono_.size();
  const std::size_t avail = std::min(span, hist + unplayed);
  const float* src = buf + (head - hist) * channels_;
  if (channels_ == 1) {
    std::memcpy(mono_.data(), src, avail * sizeof(float));
  } else {
    for (std::size_t i = 0; i < avail; ++i) {
      float sum = 0.0f;
      for (std::size_t c = 0; c < channels_; ++c) sum += src[i * channels_ + c];
      mono_[i] = sum;
    }
  }
  std::fill(mono_.begin() + static_cast<long>(avail), mono_.end(), 0.0f);
  const float inv_d = 1.0f / static_cast<float>(d);
  for (std::size_t k = 0; k < low_.size(); ++k) {
    float acc = 0.0f;
    for (std::size_t j = 0; j < d; ++j) acc += mono_[k * d + j];
    low_[k] = acc * inv_d;
  }

  const std::size_t len_low = corr_len_ / d;
  const std::size_t min_low = (min_period_ + d - 1) / d;
  const std::size_t max_low = max_lag / d;
  std::size_t best_low = 0;
  float best_c = -2.0f;
  Corr best_stats;
  for (std::size_t lag = min_low; lag <= max_low; ++lag) {
    const long a_rel = expand_mode ? -lead - static_cast<long>(lag * d) : -lead;
    const std::size_t a = static_cast<std::size_t>(a_rel + static_cast<long>(hist)) / d;
    if (a + lag + len_low > low_.size()) break;
    const Corr c = correlate(low_.data() + a, low_.data() + a + lag, len_low);
    const float n = c.normalized();
    if (n > best_c) {
      best_c = n;
      best_low = lag;
      best_stats = c;
    }
  }
  *quiet = false;
  *correlation = 0.0f;
  if (best_low == 0) return 0;
  // Quiet when both windows are (mean square of the decimated mix).
  const float power = std::max(best_stats.xx, best_stats.yy) / static_cast<float>(len_low);
  if (power < kQuietPower * static_cast<float>(channels_ * channels_)) {
    *quiet = true;
    *correlation = best_c;
    return max_lag;
  }
  // Refine at the full rate over the central half of the window.
  const long center = static_cast<long>(best_low * d);
  const long half = static_cast<long>(d / 2);
  const long lo = std::max(static_cast<long>(min_period_), center - half);
  const long hi = std::min(static_cast<long>(max_lag), center + half);
  const std::size_t len = corr_len_ / 2;
  std::size_t best = 0;
  float best_full = -2.0f;
  for (long lag = lo; lag <= hi; ++lag) {
    const long a_rel = (expand_mode ? -lead - lag : -lead) + static_cast<long>(corr_len_ / 4);
    const std::size_t a = static_cast<std::size_t>(a_rel + static_cast<long>(hist));
    const std::size_t b = a + static_cast<std::size_t>(lag);
    if (b + len > span) break;
    const float n = correlate(mono_.data() + a, mono_.data() + b, len).normalized();
    if (n > best_full) {
      best_full = n;
      best = static_cast<std::size_t>(lag);
    }
  }
  *correlation = best_full;
  return best;
}

std::size_t TimeStretcher::accelerate(float* buf, std::size_t head, std::size_t end,
                                      std::size_t max_remove) {
  if (head < history_samples_ || end <= head) return 0;
  const std::size_t unplayed = end - head;
  const std::size_t lead = history_samples_ - max_period_;
  const std::size_t after = corr_len_ - lead;  // window samples after the head
  // B's last sample (after - 1 + lag) and the cross-fade (>= min_period_ / 2) must be unplayed.
  if (unplayed < after + min_period_ || unplayed < min_period_ + min_period_ / 2) return 0;
  std::size_t max_lag =
      std::min({max_period_, max_remove, unplayed - after, unplayed - min_period_ / 2});
  if (max_lag < min_period_) return 0;
  float corr = 0.0f;
  bool quiet = false;
  const std::size_t lag = find_period(buf, head, unplayed, max_lag, false, &corr, &quiet);
  if (lag == 0 || (!quiet && corr < kMinCorrelation)) return 0;
  const std::size_t fade = std::min(lag, unplayed - lag);
  const std::size_t ch = channels_;
  float* x = buf + head * ch;
  for (std::size_t i = 0; i < fade; ++i) {
    const float w = static_cast<float>(i + 1) / static_cast<float>(fade + 1);
    for (std::size_t c = 0; c < ch; ++c) {
      x[i * ch + c] = (1.0f - w) * x[i * ch + c] + w * x[(i + lag) * ch + c];
    }
  }
  std::memmove(x + fade * ch, x + (lag + fade) * ch, (unplayed - lag - fade) * ch * sizeof(float));
  return lag;
}

std::size_t TimeStretcher::expand(float* buf, std::size_t head, std::size_t end,
                                  std::size_t capacity, std::size_t max_add) {
  if (head < history_samples_ || end <= head || capacity <= end) return 0;
  const std::size_t unplayed = end - head;
  const std::size_t lead = history_samples_ - max_period_;
  const std::size_t after = corr_len_ - lead;
  if (unplayed < after) return 0;
  const std::size_t max_lag = std::min({max_period_, max_add, unplayed, capacity - end});
  if (max_lag < min_period_) return 0;
  float corr = 0.0f;
  bool quiet = false;
  const std::size_t lag = find_period(buf, head, unplayed, max_lag, true, &corr, &quiet);
  if (lag == 0 || (!quiet && corr < kMinCorrelation)) return 0;
  const std::size_t ch = channels_;
  float* x = buf + head * ch;
  std::memmove(x + lag * ch, x, unplayed * ch * sizeof(float));
  // x[i] now lives at x[lag + i]; the period before the head is x[i - lag].
  for (std::size_t i = 0; i < lag; ++i) {
    const float w = static_cast<float>(i + 1) / static_cast<float>(lag + 1);
    for (std::size_t c = 0; c < ch; ++c) {
      const float prev = buf[(head + i - lag) * ch + c];
      x[i * ch + c] = (1.0f - w) * x[(lag + i) * ch + c] + w * prev;
    }
  }
  return lag;
}

}  // namespace rtvoice
