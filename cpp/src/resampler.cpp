#include "rtvoice/resampler.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define RTVOICE_RESAMPLER_X86 1
#endif

namespace rtvoice {
namespace {

constexpr int kSupportedRates[] = {8000, 16000, 22050, 24000, 32000, 44100, 48000};
constexpr int kMaxChannels = 64;
// Kaiser beta for ~116 dB stopband with kZeroCrossings = 38 (cutoff at the lower Nyquist).
constexpr double kKaiserBeta = 11.9;
// Taps per phase are padded with leading zeros to a multiple of this (two AVX vectors).
constexpr std::size_t kTapAlign = 16;
// Input frames appended per pass over the internal buffer.
constexpr std::size_t kBlockFrames = 2048;
// Outputs computed together by one kernel call.
constexpr std::size_t kBatch = 4;
constexpr std::size_t kAlignBytes = 64;

struct AlignedFree {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(kAlignBytes)); }
};
using AlignedFloats = std::unique_ptr<float[], AlignedFree>;

AlignedFloats aligned_zeros(std::size_t count) {
  auto* p =
      static_cast<float*>(::operator new[](count * sizeof(float), std::align_val_t(kAlignBytes)));
  std::fill(p, p + count, 0.0f);
  return AlignedFloats(p);
}

double bessel_i0(double x) {
  const double q = x * x / 4.0;
  double term = 1.0;
  double sum = 1.0;
  for (int k = 1; k < 500; ++k) {
    term *= q / (static_cast<double>(k) * k);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

// kBatch dot products of `taps` floats (a multiple of kTapAlign) between coefs[b] (64-byte
// aligned) and windows[b]. Every output goes through the same instruction sequence whichever
// batch slot it occupies, which is what makes streaming bit-identical to one-shot.
using DotBatchFn = void (*)(const float* const* coefs, const float* const* windows,
                            std::size_t taps, float* results);

void dot_batch_generic(const float* const* coefs, const float* const* windows, std::size_t taps,
                       float* results) {
  for (std::size_t b = 0; b < kBatch; ++b) {
    const float* c = coefs[b];
    const float* x = windows[b];
    float acc[8] = {};
    for (std::size_t j = 0; j < taps; j += 8) {
      for (std::size_t l = 0; l < 8; ++l) acc[l] += c[j + l] * x[j + l];
    }
    results[b] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  }
}

#ifdef RTVOICE_RESAMPLER_X86
__attribute__((target("avx2,fma"))) void dot_batch_avx2(const float* const* coefs,
                                                        const float* const* windows,
                                                        std::size_t taps, float* results) {
  const float* c0 = coefs[0];
  const float* c1 = coefs[1];
  const float* c2 = coefs[2];
  const float* c3 = coefs[3];
  const float* x0 = windows[0];
  const float* x1 = windows[1];
  const float* x2 = windows[2];
  const float* x3 = windows[3];
  __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps();
  __m256 a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
  __m256 a2 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps();
  __m256 a3 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
  for (std::size_t j = 0; j < taps; j += 16) {
    a0 = _mm256_fmadd_ps(_mm256_load_ps(c0 + j), _mm256_loadu_ps(x0 + j), a0);
    b0 = _mm256_fmadd_ps(_mm256_load_ps(c0 + j + 8), _mm256_loadu_ps(x0 + j + 8), b0);
    a1 = _mm256_fmadd_ps(_mm256_load_ps(c1 + j), _mm256_loadu_ps(x1 + j), a1);
    b1 = _mm256_fmadd_ps(_mm256_load_ps(c1 + j + 8), _mm256_loadu_ps(x1 + j + 8), b1);
    a2 = _mm256_fmadd_ps(_mm256_load_ps(c2 + j), _mm256_loadu_ps(x2 + j), a2);
    b2 = _mm256_fmadd_ps(_mm256_load_ps(c2 + j + 8), _mm256_loadu_ps(x2 + j + 8), b2);
    a3 = _mm256_fmadd_ps(_mm256_load_ps(c3 + j), _mm256_loadu_ps(x3 + j), a3);
    b3 = _mm256_fmadd_ps(_mm256_load_ps(c3 + j + 8), _mm256_loadu_ps(x3 + j + 8), b3);
  }
  const __m256 s01 = _mm256_hadd_ps(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1));
  const __m256 s23 = _mm256_hadd_ps(_mm256_add_ps(a2, b2), _mm256_add_ps(a3, b3));
  const __m256 s = _mm256_hadd_ps(s01, s23);
  _mm_storeu_ps(results, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
}

bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

inline float to_float(float v) { return v; }
inline float to_float(std::int16_t v) { return static_cast<float>(v) * (1.0f / 32768.0f); }

inline void store(float* dst, float v) { *dst = v; }
inline void store(std::int16_t* dst, float v) {
  const float s = std::min(std::max(v * 32768.0f, -32768.0f), 32767.0f);
  *dst = static_cast<std::int16_t>(std::lrint(s));
}

}  // namespace

struct Resampler::Impl {
  int in_rate_hz = 0;
  int out_rate_hz = 0;
  int channels = 1;
  bool passthrough = false;
  std::size_t L = 1;  // out / in = L / M, reduced
  std::size_t M = 1;
  std::size_t latency = 0;  // output frames
  std::size_t taps = 0;     // per phase, padded

  AlignedFloats coefs;                      // L phases x taps, each phase's taps time-reversed
  std::vector<std::ptrdiff_t> trivial;      // per phase: window offset of a lone unit tap, or -1
  std::vector<std::uint32_t> phase_of_u;    // cycle position u -> phase (u * M mod L)
  std::vector<std::uint32_t> advance_of_u;  // input frames between output u and u + 1

  AlignedFloats buf;  // planar: channel c at c * buf_cap
  std::size_t buf_cap = 0;
  std::size_t filled = 0;    // valid frames in buf
  std::size_t next_i0 = 0;   // buffer index of the newest input frame the next output reads
  std::size_t u = 0;         // position of the next output in the L-output cycle
  std::size_t in_mod_m = 0;  // total input frames mod M

  DotBatchFn dot = dot_batch_generic;
  const char* kernel = "generic";

  void design();
  void reset_state();
  std::size_t output_frames(std::size_t in_frames) const;
  void compact();
  template <typename T>
  void append(const T* in, std::size_t frames);
  template <typename T>
  std::size_t emit(T* out, std::size_t limit);
  template <typename T>
  std::size_t process(const T* in, std::size_t in_frames, T* out, std::size_t out_capacity);
  template <typename T>
  std::size_t flush(T* out, std::size_t out_capacity);
};

void Resampler::Impl::design() {
  const int g = std::gcd(in_rate_hz, out_rate_hz);
  L = static_cast<std::size_t>(out_rate_hz / g);
  M = static_cast<std::size_t>(in_rate_hz / g);
  if (passthrough) {
    taps = 0;
    return;
  }
  // The filter runs at the virtual rate L * in = M * out; R virtual samples make one period of
  // the lower rate, whose Nyquist frequency is the cutoff.
  const std::size_t R = in_rate_hz < out_rate_hz ? L : M;
  const std::size_t half_width = static_cast<std::size_t>(kZeroCrossings) * R;
  // Centre on a multiple of M so that the delay is a whole number of output frames.
  const std::size_t centre = M * ((half_width + M - 1) / M);
  const std::size_t length = centre + half_width + 1;
  const std::size_t k_taps = (length + L - 1) / L;
  taps = (k_taps + kTapAlign - 1) / kTapAlign * kTapAlign;
  latency = centre / M;

  std::vector<double> h(k_taps * L, 0.0);
  const double i0_beta = bessel_i0(kKaiserBeta);
  const double pi = 3.14159265358979323846;
  for (std::size_t k = centre - half_width; k < length; ++k) {
    const long long x = static_cast<long long>(k) - static_cast<long long>(centre);
    double sinc;
    if (x % static_cast<long long>(R) == 0) {
      sinc = x == 0 ? 1.0 : 0.0;  // exact zeros keep integer-ratio phases exactly trivial
    } else {
      const double a = pi * static_cast<double>(x) / static_cast<double>(R);
      sinc = std::sin(a) / a;
    }
    const double t = static_cast<double>(x) / static_cast<double>(half_width);
    const double w = bessel_i0(kKaiserBeta * std::sqrt(std::max(0.0, 1.0 - t * t))) / i0_beta;
    h[k] = sinc * w;
  }

  coefs = aligned_zeros(L * taps);
  trivial.assign(L, -1);
  for (std::size_t p = 0; p < L; ++p) {
    double sum = 0.0;
    std::size_t nonzero = 0;
    std::size_t last_j = 0;
    for (std::size_t j = 0; j < k_taps; ++j) {
      sum += h[p + j * L];
      if (h[p + j * L] != 0.0) {
        ++nonzero;
        last_j = j;
      }
    }
    // Unit DC gain in every phase: no images of DC or low frequencies from phase mismatch.
    const double scale = 1.0 / sum;
    float* c = coefs.get() + p * taps;
    for (std::size_t j = 0; j < k_taps; ++j) {
      c[taps - 1 - j] = static_cast<float>(h[p + j * L] * scale);
    }
    if (nonzero == 1) trivial[p] = static_cast<std::ptrdiff_t>(taps - 1 - last_j);
  }

  phase_of_u.resize(L);
  advance_of_u.resize(L);
  for (std::size_t v = 0; v < L; ++v) {
    phase_of_u[v] = static_cast<std::uint32_t>(v * M % L);
    advance_of_u[v] = static_cast<std::uint32_t>((v + 1) * M / L - v * M / L);
  }
  buf_cap = taps - 1 + kBlockFrames;
  buf = aligned_zeros(buf_cap * static_cast<std::size_t>(channels));
}

void Resampler::Impl::reset_state() {
  in_mod_m = 0;
  if (passthrough) return;
  std::fill(buf.get(), buf.get() + buf_cap * static_cast<std::size_t>(channels), 0.0f);
  filled = taps - 1;  // silent history
  next_i0 = taps - 1;
  u = 0;
}

std::size_t Resampler::Impl::output_frames(std::size_t in_frames) const {
  // ceil((r + n) L / M) - ceil(r L / M) with r = total input mod M, free of overflow.
  const std::size_t q = in_frames / M;
  const std::size_t s = in_frames % M;
  const std::size_t r = in_mod_m;
  return q * L + ((r + s) * L + M - 1) / M - (r * L + M - 1) / M;
}

void Resampler::Impl::compact() {
  // Keep the window of the next output: at most taps - 1 frames.
  const std::size_t keep_from = next_i0 + 1 - taps;
  if (keep_from == 0) return;
  const std::size_t keep = filled > keep_from ? filled - keep_from : 0;
  for (int c = 0; c < channels; ++c) {
    float* chan = buf.get() + static_cast<std::size_t>(c) * buf_cap;
    std::memmove(chan, chan + keep_from, keep * sizeof(float));
  }
  filled = keep;
  next_i0 -= keep_from;
}

template <typename T>
void Resampler::Impl::append(const T* in, std::size_t frames) {
  const std::size_t ch = static_cast<std::size_t>(channels);
  for (std::size_t c = 0; c < ch; ++c) {
    float* dst = buf.get() + c * buf_cap + filled;
    if (in == nullptr) {
      std::fill(dst, dst + frames, 0.0f);
    } else if (ch == 1) {
      for (std::size_t i = 0; i < frames; ++i) dst[i] = to_float(in[i]);
    } else {
      for (std::size_t i = 0; i < frames; ++i) dst[i] = to_float(in[i * ch + c]);
    }
  }
  filled += frames;
}

template <typename T>
std::size_t Resampler::Impl::emit(T* out, std::size_t limit) {
  std::size_t n = 0;
  {
    std::size_t i0 = next_i0;
    std::size_t v = u;
    while (n < limit && i0 < filled) {
      ++n;
      i0 += advance_of_u[v];
      if (++v == L) v = 0;
    }
  }
  if (n == 0) return 0;
  const std::size_t ch = static_cast<std::size_t>(channels);
  const float* cs[kBatch];
  const float* xs[kBatch];
  std::size_t slots[kBatch];
  float results[kBatch];
  std::size_t i0 = 0;
  std::size_t v = 0;
  for (std::size_t c = 0; c < ch; ++c) {
    const float* chan = buf.get() + c * buf_cap;
    T* dst = out + c;
    i0 = next_i0;
    v = u;
    std::size_t nb = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t p = phase_of_u[v];
      const float* window = chan + i0 + 1 - taps;
      if (trivial[p] >= 0) {
        store(dst + i * ch, window[trivial[p]]);
      } else {
        cs[nb] = coefs.get() + p * taps;
        xs[nb] = window;
        slots[nb] = i;
        if (++nb == kBatch) {
          dot(cs, xs, taps, results);
          for (std::size_t b = 0; b < kBatch; ++b) store(dst + slots[b] * ch, results[b]);
          nb = 0;
        }
      }
      i0 += advance_of_u[v];
      if (++v == L) v = 0;
    }
    if (nb != 0) {
      for (std::size_t b = nb; b < kBatch; ++b) {
        cs[b] = cs[nb - 1];
        xs[b] = xs[nb - 1];
      }
      dot(cs, xs, taps, results);
      for (std::size_t b = 0; b < nb; ++b) store(dst + slots[b] * ch, results[b]);
    }
  }
  next_i0 = i0;
  u = v;
  return n;
}

template <typename T>
std::size_t Resampler::Impl::process(const T* in, std::size_t in_frames, T* out,
                                     std::size_t out_capacity) {
  const std::size_t count = output_frames(in_frames);
  if (out_capacity < count) {
    throw std::invalid_argument("output capacity " + std::to_string(out_capacity) +
                                " frames is too small: this call produces " +
                                std::to_string(count) + " frames");
  }
  const std::size_t ch = static_cast<std::size_t>(channels);
  if (passthrough) {
    for (std::size_t i = 0; i < in_frames * ch; ++i) store(out + i, to_float(in[i]));
    return in_frames;
  }
  std::size_t produced = 0;
  std::size_t remaining = in_frames;
  while (remaining != 0) {
    if (buf_cap - filled < std::min(remaining, kBlockFrames)) compact();
    const std::size_t take = std::min(remaining, buf_cap - filled);
    append(in, take);
    in += take * ch;
    remaining -= take;
    produced += emit(out + produced * ch, count - produced);
  }
  in_mod_m = (in_mod_m + in_frames % M) % M;
  return produced;
}

template <typename T>
std::size_t Resampler::Impl::flush(T* out, std::size_t out_capacity) {
  const std::size_t count = passthrough ? 0 : latency;
  if (out_capacity < count) {
    throw std::invalid_argument("output capacity " + std::to_string(out_capacity) +
                                " frames is too small: flush produces " + std::to_string(count) +
                                " frames");
  }
  const std::size_t ch = static_cast<std::size_t>(channels);
  std::size_t produced = 0;
  while (produced < count) {
    if (buf_cap - filled < kBlockFrames) compact();
    append(static_cast<const T*>(nullptr), buf_cap - filled);
    produced += emit(out + produced * ch, count - produced);
  }
  reset_state();
  return produced;
}

Resampler::Resampler(int in_rate_hz, int out_rate_hz, int channels)
    : impl_(std::make_unique<Impl>()) {
  if (!is_supported_rate(in_rate_hz) || !is_supported_rate(out_rate_hz)) {
    throw std::invalid_argument(
        "unsupported rate pair " + std::to_string(in_rate_hz) + " -> " +
        std::to_string(out_rate_hz) +
        " Hz; supported rates are 8000, 16000, 22050, 24000, 32000, 44100 and 48000 Hz");
  }
  if (channels < 1 || channels > kMaxChannels) {
    throw std::invalid_argument("channels must be between 1 and " + std::to_string(kMaxChannels) +
                                ", got " + std::to_string(channels));
  }
  Impl& s = *impl_;
  s.in_rate_hz = in_rate_hz;
  s.out_rate_hz = out_rate_hz;
  s.channels = channels;
  s.passthrough = in_rate_hz == out_rate_hz;
  s.design();
#ifdef RTVOICE_RESAMPLER_X86
  if (cpu_has_avx2_fma()) {
    s.dot = dot_batch_avx2;
    s.kernel = "avx2+fma";
  }
#endif
  if (s.passthrough) s.kernel = "passthrough";
  s.reset_state();
}

Resampler::~Resampler() = default;
Resampler::Resampler(Resampler&&) noexcept = default;
Resampler& Resampler::operator=(Resampler&&) noexcept = default;

bool Resampler::is_supported_rate(int rate_hz) {
  return std::find(std::begin(kSupportedRates), std::end(kSupportedRates), rate_hz) !=
         std::end(kSupportedRates);
}

int Resampler::in_rate_hz() const { return impl_->in_rate_hz; }
int Resampler::out_rate_hz() const { return impl_->out_rate_hz; }
int Resampler::channels() const { return impl_->channels; }
std::size_t Resampler::latency_frames() const { return impl_->passthrough ? 0 : impl_->latency; }
double Resampler::latency_seconds() const {
  return static_cast<double>(latency_frames()) / impl_->out_rate_hz;
}
std::size_t Resampler::output_frames(std::size_t in_frames) const {
  return impl_->output_frames(in_frames);
}
std::size_t Resampler::taps_per_phase() const { return impl_->taps; }
std::size_t Resampler::phases() const { return impl_->L; }
const char* Resampler::kernel_name() const { return impl_->kernel; }

std::size_t Resampler::process(const float* in, std::size_t in_frames, float* out,
                               std::size_t out_capacity) {
  return impl_->process(in, in_frames, out, out_capacity);
}
std::size_t Resampler::process(const std::int16_t* in, std::size_t in_frames, std::int16_t* out,
                               std::size_t out_capacity) {
  return impl_->process(in, in_frames, out, out_capacity);
}
std::size_t Resampler::flush(float* out, std::size_t out_capacity) {
  return impl_->flush(out, out_capacity);
}
std::size_t Resampler::flush(std::int16_t* out, std::size_t out_capacity) {
  return impl_->flush(out, out_capacity);
}
void Resampler::reset() { impl_->reset_state(); }

}  // namespace rtvoice
