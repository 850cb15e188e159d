// Capture-side voice processing: acoustic echo cancellation against the far-end reference (what
// the Downlink handed to the speaker), then noise suppression, automatic gain control and a
// high-pass filter, in 10 ms frames of mono float audio.
//
// Backends are kept libraries, not hand-written cancellers: WebRTC's audio processing module
// (webrtc-audio-processing 1.x: AEC3, NS, AGC, high-pass; or where only 0.3 is found, its AEC
// with the extended filter and delay-agnostic mode) and SpeexDSP (MDF echo canceller, preprocessor
// with residual echo suppression, denoiser and AGC; the high-pass filter is a biquad here). Which
// ones exist is decided at build time (available_backends()).
//
// Threading: process() and the frame-level calls belong to one thread (the capture thread); the
// enable flags, the stream delay and stats() may be set or read from any thread, and take effect
// at the next frame. No allocation, no lock of ours after construction.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rtvoice {

enum class ProcessingBackend : std::uint8_t { WebRtc, Speex };

struct ProcessingConfig {
  int sample_rate_hz = 48000;  // 8000, 16000, 32000 or 48000
  ProcessingBackend backend = ProcessingBackend::WebRtc;
  bool aec = true;
  bool noise_suppression = true;
  bool agc = true;
  bool high_pass = true;
  // WebRTC only: the echo suppressor's aggressiveness, 0 (low) to 2 (high); higher removes more
  // residual echo and more of the near end in double-talk (AEC3: its suppressor's thresholds
  // scaled by 2, 1 or 1/2; AEC2: its suppression level).
  int aec_suppression = 1;
  // SpeexDSP only: the echo tail its adaptive filter covers, from 20 ms before the stream delay
  // on (MDF has no delay estimator: the far end reaches it through a delay line of the stream
  // delay less those 20 ms).
  int speex_filter_ms = 200;
  // The delay between a far-end frame given to the processor and its echo in the capture stream
  // (WebRTC's set_stream_delay_ms, which its delay estimator refines; SpeexDSP's delay line).
  int stream_delay_ms = 0;
};

struct ProcessingStats {
  std::uint64_t frames = 0;                // capture frames processed (10 ms each)
  std::uint64_t render_frames = 0;         // far-end frames given as the reference
  std::uint64_t active_render_frames = 0;  // of those, frames with far-end signal
  std::uint64_t backend_errors = 0;  // frames the library refused (passed through unprocessed)
  // Capture power in / out over the last second of far-end activity (dB), smoothed; 0 before
  // any far-end signal. A live indicator of how much the chain removes while the far end talks.
  double echo_suppression_db = 0.0;
  // WebRTC backend: its own metrics (ERLE dB, delay ms); NaN / -1 when unavailable. AEC3's ERLE
  // is its estimate of what the linear filter removes, the figure its suppressor works from,
  // capped by its config at 6 dB (what the chain removes is echo_suppression_db); its delay is
  // where its filter starts, the headroom (20 ms) and about a block before the echo.
  double backend_erle_db = std::numeric_limits<double>::quiet_NaN();
  int backend_delay_ms = -1;
  int stream_delay_ms = 0;  // the delay given to the canceller (set_stream_delay_ms)
  // Levels of the last ~100 ms (dBFS, floor -120): the capture before and after processing and
  // the far end.
  double capture_dbfs = -120.0;
  double output_dbfs = -120.0;
  double render_dbfs = -120.0;
  bool aec = false;
  bool noise_suppression = false;
  bool agc = false;
  bool high_pass = false;
};

const char* backend_name(ProcessingBackend backend);
// Throws std::invalid_argument naming the known backends.
ProcessingBackend parse_backend(const std::string& name);
// The backends this build links, the preferred (measured best) first.
std::vector<ProcessingBackend> available_backends();
// The library behind a backend and its version, e.g. "webrtc-audio-processing 1.3 (AEC3)".
std::string backend_library(ProcessingBackend backend);
// How the core configures AEC3 (delay_headroom_ms, filter_ms, coarse_filter_ms); empty when
// the build has no AEC3 or runs it as the library sets it up.
std::vector<std::pair<std::string, int>> aec3_tuning();

class AudioProcessor {
 public:
  explicit AudioProcessor(const ProcessingConfig& config);
  ~AudioProcessor();
  AudioProcessor(const AudioProcessor&) = delete;
  AudioProcessor& operator=(const AudioProcessor&) = delete;

  const ProcessingConfig& config() const { return config_; }
  // Samples in one 10 ms frame.
  std::size_t frame_samples() const { return frame_; }

  // Capture thread: one 10 ms far-end frame (what is being played), then the capture frame it
  // belongs to, processed in place. render may be null (no far end: silence).
  void process(const float* render, float* capture);

  // Any thread; applied at the next frame.
  void set_enabled(bool aec, bool noise_suppression, bool agc, bool high_pass);
  void set_stream_delay_ms(int delay_ms);

  // Any thread.
  ProcessingStats stats() const;

  class Backend;

 private:
  void apply_flags();

  ProcessingConfig config_;
  std::size_t frame_;
  std::unique_ptr<Backend> backend_;
  std::vector<float> silence_;
  std::vector<float> input_copy_;
  std::atomic<std::uint32_t> flags_;
  std::uint32_t applied_flags_ = 0xFFFFFFFFu;
  std::atomic<int> stream_delay_ms_;
  // Capture-thread statistics, published through atomics.
  double in_energy_ = 0.0;
  double out_energy_ = 0.0;
  std::atomic<std::uint64_t> frames_{0};
  std::atomic<std::uint64_t> render_frames_{0};
  std::atomic<std::uint64_t> active_render_frames_{0};
  std::atomic<std::uint64_t> backend_errors_{0};
  std::atomic<double> suppression_db_{0.0};
  std::atomic<double> backend_erle_db_{std::numeric_limits<double>::quiet_NaN()};
  std::atomic<int> backend_delay_ms_{-1};
  double level_power_[3] = {0.0, 0.0, 0.0};  // capture thread: capture in, out, render
  std::atomic<double> level_dbfs_[3] = {-120.0, -120.0, -120.0};
};

}  // namespace rtvoice
