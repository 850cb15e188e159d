#include "rtvoice/audio_processing.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "rtvoice/sanitize.hpp"

#ifdef RTVOICE_HAVE_WEBRTC_APM
#if RTVOICE_WEBRTC_APM_MAJOR >= 1
// webrtc-audio-processing-1: the AEC3 canceller (its include directory is the tree's root).
#include <api/scoped_refptr.h>
#include <modules/audio_processing/include/audio_processing.h>
#ifdef RTVOICE_WEBRTC_AEC3_CONFIG
// Internal headers (scripts/wheels/build-webrtc-apm.sh installs them): AEC3 configured here.
#include <api/audio/echo_canceller3_config.h>
#include <api/audio/echo_control.h>
#include <modules/audio_processing/aec3/echo_canceller3.h>
#endif
#else
#include <webrtc/modules/audio_processing/include/audio_processing.h>
#endif
#endif
#ifdef RTVOICE_HAVE_SPEEXDSP
#include <speex/speex_echo.h>
#include <speex/speex_preprocess.h>
#endif

namespace rtvoice {

namespace {

constexpr std::uint32_t kAec = 1u;
constexpr std::uint32_t kNs = 2u;
constexpr std::uint32_t kAgc = 4u;
constexpr std::uint32_t kHpf = 8u;

std::uint32_t pack_flags(bool aec, bool ns, bool agc, bool hpf) {
  return (aec ? kAec : 0u) | (ns ? kNs : 0u) | (agc ? kAgc : 0u) | (hpf ? kHpf : 0u);
}

// Far-end frames below this mean power (about -50 dBFS) count as silence for the statistics.
constexpr double kActiveRenderPower = 1e-5;
// Per-frame forgetting factor of the suppression statistic: about one second of activity.
constexpr double kForget = 0.99;

const ProcessingConfig& validated(const ProcessingConfig& c) {
  if (c.sample_rate_hz != 8000 && c.sample_rate_hz != 16000 && c.sample_rate_hz != 32000 &&
      c.sample_rate_hz != 48000) {
    throw std::invalid_argument("voice processing runs at 8000, 16000, 32000 or 48000 Hz, got " +
                                std::to_string(c.sample_rate_hz));
  }
  if (c.speex_filter_ms < 20 || c.speex_filter_ms > 2000) {
    throw std::invalid_argument("speex_filter_ms must be between 20 and 2000, got " +
                                std::to_string(c.speex_filter_ms));
  }
  if (c.aec_suppression < 0 || c.aec_suppression > 2) {
    throw std::invalid_argument("aec_suppression must be 0, 1 or 2, got " +
                                std::to_string(c.aec_suppression));
  }
  if (c.stream_delay_ms < 0 || c.stream_delay_ms > 1000) {
    throw std::invalid_argument("stream_delay_ms must be between 0 and 1000, got " +
                                std::to_string(c.stream_delay_ms));
  }
#if defined(RTVOICE_HAVE_WEBRTC_APM) && RTVOICE_WEBRTC_APM_MAJOR >= 1 && \
    !defined(RTVOICE_WEBRTC_AEC3_CONFIG)
  if (c.backend == ProcessingBackend::WebRtc && c.aec_suppression != 1) {
    throw std::invalid_argument(
        "aec_suppression: this build's AEC3 (webrtc-audio-processing-1 without its internal "
        "headers) has no suppression levels; scripts/wheels/build-webrtc-apm.sh builds one "
        "that has");
  }
#endif
  bool found = false;
  for (ProcessingBackend b : available_backends()) found = found || b == c.backend;
  if (!found) {
    throw std::invalid_argument(std::string("this build of rtvoice has no ") +
                                backend_name(c.backend) + " voice processing backend");
  }
  return c;
}

}  // namespace

const char* backend_name(ProcessingBackend backend) {
  return backend == ProcessingBackend::WebRtc ? "webrtc" : "speex";
}

ProcessingBackend parse_backend(const std::string& name) {
  if (name == "webrtc") return ProcessingBackend::WebRtc;
  if (name == "speex") return ProcessingBackend::Speex;
  throw std::invalid_argument("backend must be 'webrtc' or 'speex', got '" + name + "'");
}

std::vector<ProcessingBackend> available_backends() {
  std::vector<ProcessingBackend> out;
#ifdef RTVOICE_HAVE_WEBRTC_APM
  out.push_back(ProcessingBackend::WebRtc);
#endif
#ifdef RTVOICE_HAVE_SPEEXDSP
  out.push_back(ProcessingBackend::Speex);
#endif
  return out;
}

std::string backend_library(ProcessingBackend backend) {
  if (backend == ProcessingBackend::WebRtc) {
#if defined(RTVOICE_HAVE_WEBRTC_APM) && RTVOICE_WEBRTC_APM_MAJOR >= 1
    return std::string("webrtc-audio-processing ") + RTVOICE_WEBRTC_APM_VERSION + " (AEC3)";
#elif defined(RTVOICE_HAVE_WEBRTC_APM)
    return std::string("webrtc-audio-processing ") + RTVOICE_WEBRTC_APM_VERSION + " (AEC2)";
#endif
  } else {
#if defined(RTVOICE_HAVE_SPEEXDSP) && defined(RTVOICE_SPEEXDSP_VERSION)
    return std::string("speexdsp ") + RTVOICE_SPEEXDSP_VERSION;
#elif defined(RTVOICE_HAVE_SPEEXDSP)
    return "speexdsp";
#endif
  }
  throw std::invalid_argument(std::string("this build of rtvoice has no ") + backend_name(backend) +
                              " voice processing backend");
}

// One library behind the processor. Every method runs on the capture thread.
class AudioProcessor::Backend {
 public:
  virtual ~Backend() = default;
  virtual void apply(std::uint32_t flags) = 0;
  virtual bool process(const float* render, float* capture, int stream_delay_ms) = 0;
  // Reads the library's own metrics (called about once a second).
  virtual void metrics(double& erle_db, int& delay_ms) {
    erle_db = std::numeric_limits<double>::quiet_NaN();
    delay_ms = -1;
  }
};

namespace {

// Second-order Butterworth high-pass (RBJ biquad), transposed direct form II.
class HighPass {
 public:
  HighPass(int rate_hz, double cutoff_hz) {
    const double w0 = 2.0 * M_PI * cutoff_hz / rate_hz;
    const double alpha = std::sin(w0) / (2.0 * std::sqrt(0.5));
    const double c = std::cos(w0);
    const double a0 = 1.0 + alpha;
    b0_ = (1.0 + c) / 2.0 / a0;
    b1_ = -(1.0 + c) / a0;
    b2_ = b0_;
    a1_ = -2.0 * c / a0;
    a2_ = (1.0 - alpha) / a0;
  }
  void process(float* x, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const double in = x[i];
      const double out = b0_ * in + z1_;
      z1_ = b1_ * in - a1_ * out + z2_;
      z2_ = b2_ * in - a2_ * out;
      x[i] = static_cast<float>(out);
    }
  }

 private:
  double b0_, b1_, b2_, a1_, a2_;
  double z1_ = 0.0, z2_ = 0.0;
};

#ifdef RTVOICE_HAVE_WEBRTC_APM
// One 10 ms frame through an APM (either release: the float stream calls are the same): the
// far-end frame as the reverse stream, the delay when AEC is on, the capture frame in place.
bool process_frame(webrtc::AudioProcessing& apm, const webrtc::StreamConfig& stream, float* scratch,
                   const float* render, float* capture, int stream_delay_ms, bool aec) {
  const float* rsrc[1] = {render};
  float* rdst[1] = {scratch};
  if (apm.ProcessReverseStream(rsrc, stream, stream, rdst) != webrtc::AudioProcessing::kNoError) {
    return false;
  }
  if (aec) apm.set_stream_delay_ms(stream_delay_ms);
  const float* csrc[1] = {capture};
  float* cdst[1] = {capture};
  return apm.ProcessStream(csrc, stream, stream, cdst) == webrtc::AudioProcessing::kNoError;
}

#if RTVOICE_WEBRTC_APM_MAJOR >= 1
#ifdef RTVOICE_WEBRTC_AEC3_CONFIG
constexpr std::size_t kAec3HeadroomBlocks = 5;  // 4 ms blocks
constexpr std::size_t kAec3FilterBlocks = 36;
constexpr std::size_t kAec3CoarseFilterBlocks = 18;

// AEC3 with the suppression level applied to its suppressor: the echo-to-near-end ratios at
// which it starts and fully suppresses, scaled from the library's defaults (moderate) by 2 (low:
// more of the near end kept in double-talk) or 1/2 (high: more residual echo removed), in both
// of its tunings (the normal one and the one for a dominant near end), and its linear filter
// placed and sized as below.
class Aec3Factory final : public webrtc::EchoControlFactory {
 public:
  explicit Aec3Factory(int suppression) {
    const float scale = suppression == 0 ? 2.0f : suppression == 2 ? 0.5f : 1.0f;
    auto& sup = config_.suppressor;
    for (auto* mask : {&sup.normal_tuning.mask_lf, &sup.normal_tuning.mask_hf,
                       &sup.nearend_tuning.mask_lf, &sup.nearend_tuning.mask_hf}) {
      mask->enr_transparent *= scale;
      mask->enr_suppress *= scale;
    }
    // The linear filter starts 20 ms before the delay the estimator found (the library's 2 ms
    // headroom let the estimator's occasional late pick leave the echo's direct path outside
    // the filter, and the whole reply through, in about 1 call in 12 through the audio-server
    // loop; none in 110 with this). The refined filter is 36 blocks (144 ms) long: 18 (72 ms,
    // the library's 52 past the delay) leave a room's reverberant tail to the suppressor, which
    // on the benchmark's scenes (benchmarks/aec) kept 20-21 dB of ERLE across a living room or
    // a hall where this reaches 26-28 dB from the first second. The coarse filter, which the
    // refined one follows while converging, stays at 18 blocks (72 ms): longer, it adapts more
    // noisily (24 blocks beside a 40-block refined one: the audio-server loop's echo removal fell
    // from a median 40 to 33 dB and 2 replies of 40 were heard; 50 and 50: 8-21 dB on the
    // scenes).
    config_.delay.delay_headroom_samples = kAec3HeadroomBlocks * 64;
    for (std::size_t* blocks :
         {&config_.filter.refined.length_blocks, &config_.filter.refined_initial.length_blocks}) {
      *blocks = kAec3FilterBlocks;
    }
    for (std::size_t* blocks :
         {&config_.filter.coarse.length_blocks, &config_.filter.coarse_initial.length_blocks}) {
      *blocks = kAec3CoarseFilterBlocks;
    }
    webrtc::EchoCanceller3Config::Validate(&config_);
  }
  const webrtc::EchoCanceller3Config& config() const { return config_; }
  std::unique_ptr<webrtc::EchoControl> Create(int sample_rate_hz, int num_render_channels,
                                              int num_capture_channels) override {
    return std::make_unique<webrtc::EchoCanceller3>(config_, sample_rate_hz,
                                                    static_cast<std::size_t>(num_render_channels),
                                                    static_cast<std::size_t>(num_capture_channels));
  }

 private:
  webrtc::EchoCanceller3Config config_;
};
#endif

// webrtc-audio-processing 1.x: AEC3 (linear filter with its own delay estimator, then a
// suppressor), NS, AGC1 in adaptive-digital mode and the high-pass filter, set through one Config.
// An APM given an echo control factory always runs it, whatever the config says, so AEC on and
// AEC off are two instances made up front (no allocation when the flag flips); each frame goes
// through the one the flags select, and both carry the same NS, AGC and high-pass settings.
class WebRtcBackend final : public AudioProcessor::Backend {
 public:
  WebRtcBackend(const ProcessingConfig& c, std::size_t frame)
      : stream_(c.sample_rate_hz, 1), scratch_(frame) {
#ifdef RTVOICE_WEBRTC_AEC3_CONFIG
    with_aec_ = webrtc::AudioProcessingBuilder()
                    .SetEchoControlFactory(std::make_unique<Aec3Factory>(c.aec_suppression))
                    .Create();
#else
    with_aec_ = webrtc::AudioProcessingBuilder().Create();  // AEC3 as the library sets it up
#endif
    without_aec_ = webrtc::AudioProcessingBuilder().Create();
    webrtc::ProcessingConfig pc = {{stream_, stream_, stream_, stream_}};
    for (webrtc::AudioProcessing* apm : {with_aec_.get(), without_aec_.get()}) {
      if (apm == nullptr) throw std::runtime_error("webrtc-audio-processing: Create failed");
      if (apm->Initialize(pc) != webrtc::AudioProcessing::kNoError) {
        throw std::runtime_error("webrtc-audio-processing: Initialize failed");
      }
    }
    config_.echo_canceller.mobile_mode = false;
    // AEC3 would force the high-pass filter on; here it follows its own flag.
    config_.echo_canceller.enforce_high_pass_filtering = false;
    config_.noise_suppression.level = webrtc::AudioProcessing::Config::NoiseSuppression::kHigh;
    config_.gain_controller1.mode =
        webrtc::AudioProcessing::Config::GainController1::kAdaptiveDigital;
    config_.gain_controller1.target_level_dbfs = 3;
    config_.gain_controller1.compression_gain_db = 9;
    config_.gain_controller1.enable_limiter = true;
    config_.gain_controller1.analog_gain_controller.enabled = false;
  }

  void apply(std::uint32_t flags) override {
    aec_ = (flags & kAec) != 0;
    config_.noise_suppression.enabled = (flags & kNs) != 0;
    config_.gain_controller1.enabled = (flags & kAgc) != 0;
    config_.high_pass_filter.enabled = (flags & kHpf) != 0;
    config_.echo_canceller.enabled = true;
    with_aec_->ApplyConfig(config_);
    config_.echo_canceller.enabled = false;
    without_aec_->ApplyConfig(config_);
  }

  bool process(const float* render, float* capture, int stream_delay_ms) override {
    webrtc::AudioProcessing& apm = aec_ ? *with_aec_ : *without_aec_;
    return process_frame(apm, stream_, scratch_.data(), render, capture, stream_delay_ms, aec_);
  }

  void metrics(double& erle_db, int& delay_ms) override {
    erle_db = std::numeric_limits<double>::quiet_NaN();
    delay_ms = -1;
    if (!aec_) return;
    const webrtc::AudioProcessingStats s = with_aec_->GetStatistics();
    if (s.echo_return_loss_enhancement) erle_db = *s.echo_return_loss_enhancement;
    if (s.delay_ms) delay_ms = *s.delay_ms;
  }

 private:
  webrtc::StreamConfig stream_;
  std::vector<float> scratch_;
  rtc::scoped_refptr<webrtc::AudioProcessing> with_aec_;
  rtc::scoped_refptr<webrtc::AudioProcessing> without_aec_;
  webrtc::AudioProcessing::Config config_;
  bool aec_ = false;
};
#else
class WebRtcBackend final : public AudioProcessor::Backend {
 public:
  WebRtcBackend(const ProcessingConfig& c, std::size_t frame)
      : frame_(frame), stream_(c.sample_rate_hz, 1), scratch_(frame) {
    webrtc::Config config;
    config.Set<webrtc::ExtendedFilter>(new webrtc::ExtendedFilter(true));
    config.Set<webrtc::DelayAgnostic>(new webrtc::DelayAgnostic(true));
    apm_.reset(webrtc::AudioProcessing::Create(config));
    if (!apm_) throw std::runtime_error("webrtc-audio-processing: Create failed");
    webrtc::ProcessingConfig pc = {{stream_, stream_, stream_, stream_}};
    if (apm_->Initialize(pc) != webrtc::AudioProcessing::kNoError) {
      throw std::runtime_error("webrtc-audio-processing: Initialize failed");
    }
    apm_->echo_cancellation()->set_suppression_level(
        static_cast<webrtc::EchoCancellation::SuppressionLevel>(c.aec_suppression));
    apm_->echo_cancellation()->enable_drift_compensation(false);
    apm_->echo_cancellation()->enable_metrics(true);
    apm_->echo_cancellation()->enable_delay_logging(true);
    apm_->noise_suppression()->set_level(webrtc::NoiseSuppression::kHigh);
    apm_->gain_control()->set_mode(webrtc::GainControl::kAdaptiveDigital);
    apm_->gain_control()->set_target_level_dbfs(3);
    apm_->gain_control()->set_compression_gain_db(9);
    apm_->gain_control()->enable_limiter(true);
  }

  void apply(std::uint32_t flags) override {
    apm_->echo_cancellation()->Enable((flags & kAec) != 0);
    apm_->noise_suppression()->Enable((flags & kNs) != 0);
    apm_->gain_control()->Enable((flags & kAgc) != 0);
    apm_->high_pass_filter()->Enable((flags & kHpf) != 0);
    aec_ = (flags & kAec) != 0;
  }

  bool process(const float* render, float* capture, int stream_delay_ms) override {
    return process_frame(*apm_, stream_, scratch_.data(), render, capture, stream_delay_ms, aec_);
  }

  void metrics(double& erle_db, int& delay_ms) override {
    erle_db = std::numeric_limits<double>::quiet_NaN();
    delay_ms = -1;
    if (!aec_) return;
    webrtc::EchoCancellation::Metrics m;
    if (apm_->echo_cancellation()->GetMetrics(&m) == webrtc::AudioProcessing::kNoError) {
      erle_db = m.echo_return_loss_enhancement.average;
    }
    int median = 0, std_dev = 0;
    float poor = 0.0f;
    if (apm_->echo_cancellation()->GetDelayMetrics(&median, &std_dev, &poor) ==
        webrtc::AudioProcessing::kNoError) {
      delay_ms = median;
    }
  }

 private:
  std::size_t frame_;
  webrtc::StreamConfig stream_;
  std::vector<float> scratch_;
  std::unique_ptr<webrtc::AudioProcessing> apm_;
  bool aec_ = false;
};
#endif  // RTVOICE_WEBRTC_APM_MAJOR
#endif

#ifdef RTVOICE_HAVE_SPEEXDSP
constexpr int kSpeexHeadroomMs = 20;
constexpr int kSpeexMaxDelayMs = 1000;  // stream_delay_ms's own bound

class SpeexBackend final : public AudioProcessor::Backend {
 public:
  SpeexBackend(const ProcessingConfig& c, std::size_t frame)
      : frame_(frame),
        rate_(c.sample_rate_hz),
        hpf_(c.sample_rate_hz, 80.0),
        cap_(frame),
        ref_(frame),
        out_(frame),
        delayed_(frame),
        line_(static_cast<std::size_t>(c.sample_rate_hz) * kSpeexMaxDelayMs / 1000 + frame, 0.0f) {
    int rate = c.sample_rate_hz;
    echo_ =
        speex_echo_state_init(static_cast<int>(frame), c.sample_rate_hz / 1000 * c.speex_filter_ms);
    pre_ = speex_preprocess_state_init(static_cast<int>(frame), rate);
    if (echo_ == nullptr || pre_ == nullptr) {
      if (echo_ != nullptr) speex_echo_state_destroy(echo_);
      if (pre_ != nullptr) speex_preprocess_state_destroy(pre_);
      throw std::runtime_error("speexdsp: state init failed");
    }
    speex_echo_ctl(echo_, SPEEX_ECHO_SET_SAMPLING_RATE, &rate);
    float level = 8000.0f;  // AGC target level (int16 scale); a float in floating-point builds
    speex_preprocess_ctl(pre_, SPEEX_PREPROCESS_SET_AGC_LEVEL, &level);
    int noise_db = -25;
    speex_preprocess_ctl(pre_, SPEEX_PREPROCESS_SET_NOISE_SUPPRESS, &noise_db);
  }
  ~SpeexBackend() override {
    speex_echo_state_destroy(echo_);
    speex_preprocess_state_destroy(pre_);
  }

  void apply(std::uint32_t flags) override {
    const bool aec = (flags & kAec) != 0;
    if (aec && !aec_) speex_echo_state_reset(echo_);
    aec_ = aec;
    ns_ = (flags & kNs) != 0;
    agc_ = (flags & kAgc) != 0;
    hpf_on_ = (flags & kHpf) != 0;
    int on = ns_ ? 1 : 0;
    speex_preprocess_ctl(pre_, SPEEX_PREPROCESS_SET_DENOISE, &on);
    on = agc_ ? 1 : 0;
    speex_preprocess_ctl(pre_, SPEEX_PREPROCESS_SET_AGC, &on);
    // Residual echo suppression runs in the preprocessor, which needs the echo state.
    speex_preprocess_ctl(pre_, SPEEX_PREPROCESS_SET_ECHO_STATE, aec_ ? echo_ : nullptr);
  }

  bool process(const float* render, float* capture, int stream_delay_ms) override {
    const float* reference = delay_line(render, stream_delay_ms);
    if (hpf_on_) hpf_.process(capture, frame_);
    if (!aec_ && !ns_ && !agc_) return true;
    to_int16(capture, cap_.data());
    spx_int16_t* result = cap_.data();
    if (aec_) {
      to_int16(reference, ref_.data());
      speex_echo_cancellation(echo_, cap_.data(), ref_.data(), out_.data());
      result = out_.data();
    }
    speex_preprocess_run(pre_, result);
    for (std::size_t i = 0; i < frame_; ++i) capture[i] = static_cast<float>(result[i]) / 32768.0f;
    return true;
  }

 private:
  void to_int16(const float* in, spx_int16_t* out) const {
    for (std::size_t i = 0; i < frame_; ++i) {
      const float v = std::clamp(in[i] * 32768.0f, -32768.0f, 32767.0f);
      out[i] = static_cast<spx_int16_t>(std::lrint(v));
    }
  }

  // MDF has no delay estimator: the far end goes through a delay line of the stream delay less
  // kSpeexHeadroomMs (so that the filter starts before the echo's direct path even when the
  // delay is told a little long), and the filter covers the room from there on. The line always
  // runs, so that turning AEC on finds the last second of the far end in it.
  const float* delay_line(const float* render, int stream_delay_ms) {
    const std::size_t size = line_.size();
    for (std::size_t i = 0; i < frame_; ++i) line_[(write_ + i) % size] = render[i];
    write_ = (write_ + frame_) % size;
    const int ms = std::clamp(stream_delay_ms - kSpeexHeadroomMs, 0, kSpeexMaxDelayMs);
    const std::size_t delay = static_cast<std::size_t>(rate_) * static_cast<std::size_t>(ms) / 1000;
    if (delay != delay_) {
      // What the filter learnt belongs to the old alignment: start again (no allocation).
      if (aec_ && frames_ > 0) speex_echo_state_reset(echo_);
      delay_ = delay;
    }
    ++frames_;
    if (delay == 0) return render;
    // The frame that ends `delay` samples before the one just written.
    const std::size_t start = (write_ + size - frame_ - delay) % size;
    for (std::size_t i = 0; i < frame_; ++i) delayed_[i] = line_[(start + i) % size];
    return delayed_.data();
  }

  std::size_t frame_;
  int rate_;
  HighPass hpf_;
  SpeexEchoState* echo_ = nullptr;
  SpeexPreprocessState* pre_ = nullptr;
  std::vector<spx_int16_t> cap_, ref_, out_;
  std::vector<float> delayed_, line_;
  std::size_t write_ = 0;
  std::size_t delay_ = 0;
  std::uint64_t frames_ = 0;
  bool aec_ = false, ns_ = false, agc_ = false, hpf_on_ = false;
};
#endif

}  // namespace

std::vector<std::pair<std::string, int>> aec3_tuning() {
#if defined(RTVOICE_HAVE_WEBRTC_APM) && RTVOICE_WEBRTC_APM_MAJOR >= 1 && \
    defined(RTVOICE_WEBRTC_AEC3_CONFIG)
  const Aec3Factory factory(1);
  const webrtc::EchoCanceller3Config& c = factory.config();
  // AEC3 works in 4 ms blocks of 64 samples at 16 kHz.
  return {{"delay_headroom_ms", static_cast<int>(c.delay.delay_headroom_samples / 16)},
          {"filter_ms", static_cast<int>(c.filter.refined.length_blocks * 4)},
          {"coarse_filter_ms", static_cast<int>(c.filter.coarse.length_blocks * 4)}};
#else
  return {};  // no AEC3, or AEC3 as the library sets it up
#endif
}

AudioProcessor::AudioProcessor(const ProcessingConfig& config)
    : config_(validated(config)),
      frame_(static_cast<std::size_t>(config.sample_rate_hz / 100)),
      silence_(frame_, 0.0f),
      input_copy_(frame_, 0.0f),
      flags_(pack_flags(config.aec, config.noise_suppression, config.agc, config.high_pass)),
      stream_delay_ms_(config.stream_delay_ms) {
#ifdef RTVOICE_HAVE_WEBRTC_APM
  if (config_.backend == ProcessingBackend::WebRtc) {
    backend_ = std::make_unique<WebRtcBackend>(config_, frame_);
  }
#endif
#ifdef RTVOICE_HAVE_SPEEXDSP
  if (config_.backend == ProcessingBackend::Speex) {
    backend_ = std::make_unique<SpeexBackend>(config_, frame_);
  }
#endif
  if (!backend_) throw std::invalid_argument("no voice processing backend");
  apply_flags();
}

AudioProcessor::~AudioProcessor() = default;

void AudioProcessor::set_enabled(bool aec, bool noise_suppression, bool agc, bool high_pass) {
  flags_.store(pack_flags(aec, noise_suppression, agc, high_pass), std::memory_order_release);
}

void AudioProcessor::set_stream_delay_ms(int delay_ms) {
  stream_delay_ms_.store(std::clamp(delay_ms, 0, 1000), std::memory_order_relaxed);
}

void AudioProcessor::apply_flags() {
  const std::uint32_t flags = flags_.load(std::memory_order_acquire);
  if (flags == applied_flags_) return;
  backend_->apply(flags);
  applied_flags_ = flags;
}

void AudioProcessor::process(const float* render, float* capture) {
  apply_flags();
  const float* ref = render;
  if (ref == nullptr) {
    ref = silence_.data();
  } else {
    render_frames_.fetch_add(1, std::memory_order_relaxed);
    if (!all_finite(ref, frame_)) {
      copy_finite(ref, input_copy_.data(), frame_);
      ref = input_copy_.data();
    }
  }
  copy_finite(capture, capture, frame_);
  double render_power = 0.0, in_power = 0.0;
  for (std::size_t i = 0; i < frame_; ++i) {
    render_power += static_cast<double>(ref[i]) * ref[i];
    in_power += static_cast<double>(capture[i]) * capture[i];
  }
  render_power /= static_cast<double>(frame_);
  if (!backend_->process(ref, capture, stream_delay_ms_.load(std::memory_order_relaxed))) {
    backend_errors_.fetch_add(1, std::memory_order_relaxed);
  }
  double out_power = 0.0;
  for (std::size_t i = 0; i < frame_; ++i)
    out_power += static_cast<double>(capture[i]) * capture[i];
  const double powers[3] = {in_power / static_cast<double>(frame_),
                            out_power / static_cast<double>(frame_), render_power};
  for (int k = 0; k < 3; ++k) {
    level_power_[k] = 0.9 * level_power_[k] + 0.1 * powers[k];
    level_dbfs_[k].store(std::max(-120.0, 10.0 * std::log10(level_power_[k] + 1e-12)),
                         std::memory_order_relaxed);
  }
  if (render_power > kActiveRenderPower) {
    in_energy_ = kForget * in_energy_ + in_power;
    out_energy_ = kForget * out_energy_ + out_power;
    if (out_energy_ > 0.0 && in_energy_ > 0.0) {
      suppression_db_.store(10.0 * std::log10(in_energy_ / out_energy_), std::memory_order_relaxed);
    }
    active_render_frames_.fetch_add(1, std::memory_order_relaxed);
  }
  const std::uint64_t n = frames_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n % 100 == 0) {
    double erle = 0.0;
    int delay = -1;
    backend_->metrics(erle, delay);
    backend_erle_db_.store(erle, std::memory_order_relaxed);
    backend_delay_ms_.store(delay, std::memory_order_relaxed);
  }
}

ProcessingStats AudioProcessor::stats() const {
  ProcessingStats s;
  s.frames = frames_.load(std::memory_order_relaxed);
  s.render_frames = render_frames_.load(std::memory_order_relaxed);
  s.active_render_frames = active_render_frames_.load(std::memory_order_relaxed);
  s.backend_errors = backend_errors_.load(std::memory_order_relaxed);
  s.echo_suppression_db = suppression_db_.load(std::memory_order_relaxed);
  s.backend_erle_db = backend_erle_db_.load(std::memory_order_relaxed);
  s.backend_delay_ms = backend_delay_ms_.load(std::memory_order_relaxed);
  s.stream_delay_ms = stream_delay_ms_.load(std::memory_order_relaxed);
  s.capture_dbfs = level_dbfs_[0].load(std::memory_order_relaxed);
  s.output_dbfs = level_dbfs_[1].load(std::memory_order_relaxed);
  s.render_dbfs = level_dbfs_[2].load(std::memory_order_relaxed);
  const std::uint32_t f = flags_.load(std::memory_order_relaxed);
  s.aec = (f & kAec) != 0;
  s.noise_suppression = (f & kNs) != 0;
  s.agc = (f & kAgc) != 0;
  s.high_pass = (f & kHpf) != 0;
  return s;
}

}  // namespace rtvoice
