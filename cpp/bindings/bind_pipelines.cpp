#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <memory>
#include <optional>
#include <tuple>

#include <chrono>
#include <cstring>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#endif
#include <mutex>
#include <utility>
#include <vector>

#include "common.hpp"
#include "processing_common.hpp"
#include "rtvoice/media_engine.hpp"
#include "rtvoice/pipelines.hpp"

namespace rtvoice::bind {
namespace {

PipelineMode parse_mode(const std::string& mode) {
  if (mode == "opus") return PipelineMode::Opus;
  if (mode == "pcm16") return PipelineMode::Pcm16;
  throw py::value_error("mode must be 'opus' or 'pcm16', got '" + mode + "'");
}

const char* mode_name(PipelineMode mode) { return mode == PipelineMode::Opus ? "opus" : "pcm16"; }

// PortAudio's callback status flags (paInputUnderflow ... paOutputOverflow), as sounddevice
// passes them on.
constexpr unsigned kInputUnderflow = 0x1;
constexpr unsigned kInputOverflow = 0x2;
constexpr unsigned kOutputUnderflow = 0x4;
constexpr unsigned kOutputOverflow = 0x8;

std::int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Counters of a sound device's callbacks, kept at the edge where PortAudio reports them. Written
// by the device's callback thread only; read from any thread.
struct DeviceCounters {
  std::atomic<std::uint64_t> blocks{0};
  std::atomic<std::uint64_t> underflows{0};
  std::atomic<std::uint64_t> overflows{0};
  // Callbacks that came more than 1.5 blocks after the one before, and the longest gap after
  // the first kSettleBlocks (a stream's start is irregular): a device buffering less than that
  // gap plays an underrun.
  std::atomic<std::uint64_t> late_blocks{0};
  std::atomic<std::int64_t> max_gap_ns{0};
  std::int64_t last_ns = 0;
  static constexpr std::uint64_t kSettleBlocks = 100;
  void count(unsigned status, unsigned underflow, unsigned overflow, std::int64_t now_ns,
             std::size_t frames, int rate_hz) {
    const std::uint64_t n = blocks.fetch_add(1, std::memory_order_relaxed);
    if (status & underflow) underflows.fetch_add(1, std::memory_order_relaxed);
    if (status & overflow) overflows.fetch_add(1, std::memory_order_relaxed);
    if (last_ns != 0) {
      const std::int64_t gap = now_ns - last_ns;
      const auto block_ns = static_cast<std::int64_t>(frames * 1000000000ull /
                                                      static_cast<unsigned long long>(rate_hz));
      if (2 * gap > 3 * block_ns) late_blocks.fetch_add(1, std::memory_order_relaxed);
      if (n >= kSettleBlocks && gap > max_gap_ns.load(std::memory_order_relaxed)) {
        max_gap_ns.store(gap, std::memory_order_relaxed);
      }
    }
    last_ns = now_ns;
  }
};

class PyUplink {
 public:
  explicit PyUplink(const UplinkConfig& config)
      : uplink_(config), packet_(uplink_.max_packet_bytes()) {}

  std::size_t push(const py::array& pcm) {
    if (driven_.load(std::memory_order_acquire)) {
      throw std::runtime_error("Uplink.push: a CaptureDriver owns this Uplink's capture side");
    }
    ExclusiveUse guard(capture_busy_, "Uplink.push");
    const int ch = uplink_.config().channels;
    if (array_sample_type(pcm, "pcm") == SampleType::Float32) {
      const std::size_t frames = check_audio<float>(pcm, ch, "pcm");
      const float* src = static_cast<const float*>(pcm.data());
      py::gil_scoped_release nogil;
      return uplink_.push(src, frames);
    }
    const std::size_t frames = check_audio<std::int16_t>(pcm, ch, "pcm");
    const std::int16_t* src = static_cast<const std::int16_t*>(pcm.data());
    py::gil_scoped_release nogil;
    return uplink_.push(src, frames);
  }

  // A sound device's input callback: push() plus PortAudio's status flags, counted.
  // At the device rate (set_device_rate), converted natively when it is not the input rate.
  std::size_t push_from_device(const py::array& pcm, unsigned status) {
    const std::int64_t now_ns = steady_now_ns();
    if (driven_.load(std::memory_order_acquire)) {
      throw std::runtime_error("Uplink.push: a CaptureDriver owns this Uplink's capture side");
    }
    ExclusiveUse guard(capture_busy_, "Uplink.push_from_device");
    const std::size_t frames = check_audio<float>(pcm, uplink_.config().channels, "pcm");
    const int rate =
        uplink_.device_rate_hz() != 0 ? uplink_.device_rate_hz() : uplink_.config().input_rate_hz;
    device_.count(status, kInputUnderflow, kInputOverflow, now_ns, frames, rate);
    const float* src = static_cast<const float*>(pcm.data());
    py::gil_scoped_release nogil;
    return uplink_.push_device(src, frames);
  }

  void set_device_rate(int rate_hz) {
    ExclusiveUse guard(capture_busy_, "Uplink.set_device_rate");
    uplink_.set_device_rate(rate_hz);
  }

  void set_processing(const std::optional<std::string>& backend, bool aec, bool ns, bool agc,
                      bool hpf, int stream_delay_ms, int speex_filter_ms, int aec_suppression) {
    ProcessingConfig c;
    c.backend = backend_or_default(backend);
    if (!backend) {
      if (const AudioProcessor* p = uplink_.processor()) c.backend = p->config().backend;
    }
    c.aec = aec;
    c.noise_suppression = ns;
    c.agc = agc;
    c.high_pass = hpf;
    c.stream_delay_ms = stream_delay_ms;
    c.speex_filter_ms = speex_filter_ms;
    c.aec_suppression = aec_suppression;
    uplink_.set_processing(c);
  }

  py::object processing_stats() const {
    const AudioProcessor* p = uplink_.processor();
    if (p == nullptr) return py::none();
    return processing_stats_dict(p->stats(), p->config().backend);
  }

  std::optional<std::tuple<py::bytes, std::uint32_t, std::uint16_t>> pop_packet() {
    ExclusiveUse guard(network_busy_, "Uplink.pop_packet");
    UplinkPacketInfo info;
    bool got;
    {
      py::gil_scoped_release nogil;
      got = uplink_.pop_packet(packet_.data(), packet_.size(), info);
    }
    if (!got) return std::nullopt;
    return std::make_tuple(py::bytes(reinterpret_cast<const char*>(packet_.data()), info.bytes),
                           info.timestamp, info.seq);
  }

  void finish() {
    ExclusiveUse guard(network_busy_, "Uplink.finish");
    uplink_.finish();
  }

  std::optional<std::tuple<py::bytes, std::uint32_t, std::uint16_t>> pop_due(std::int64_t now_ns) {
    ExclusiveUse guard(network_busy_, "Uplink.pop_due");
    UplinkPacketInfo info;
    bool got;
    {
      py::gil_scoped_release nogil;
      got = uplink_.pop_due(now_ns, packet_.data(), packet_.size(), info);
    }
    if (!got) return std::nullopt;
    return std::make_tuple(py::bytes(reinterpret_cast<const char*>(packet_.data()), info.bytes),
                           info.timestamp, info.seq);
  }

  py::object next_due_ns() const {
    const std::int64_t due = uplink_.next_due_ns();
    if (due == std::numeric_limits<std::int64_t>::min()) return py::none();
    return py::int_(due);
  }

  py::array take_input(std::size_t max_frames) {
    ExclusiveUse guard(network_busy_, "Uplink.take_input");
    const int ch = uplink_.config().channels;
    const std::size_t n = std::min(max_frames, uplink_.pending_input_frames());
    py::array_t<float> out = new_audio<float>(n, ch);
    float* dst = out.mutable_data();
    std::size_t got;
    {
      py::gil_scoped_release nogil;
      got = uplink_.take_input(dst, n);
    }
    (void)got;  // this thread is the only consumer: all n frames were there
    return out;
  }

  void set_packet_loss_perc(int percent) {
    ExclusiveUse guard(network_busy_, "Uplink.set_packet_loss_perc");
    uplink_.set_packet_loss_perc(percent);
  }
  void set_bitrate(int bps) {
    ExclusiveUse guard(network_busy_, "Uplink.set_bitrate");
    uplink_.set_bitrate(bps);
  }
  void set_fec(bool enabled) {
    ExclusiveUse guard(network_busy_, "Uplink.set_fec");
    uplink_.set_fec(enabled);
  }
  void set_dtx(bool enabled) {
    ExclusiveUse guard(network_busy_, "Uplink.set_dtx");
    uplink_.set_dtx(enabled);
  }

  py::dict stats() const {
    const UplinkStats s = uplink_.stats();
    py::dict d;
    d["frames_pushed"] = s.frames_pushed;
    d["frames_dropped"] = s.frames_dropped;
    d["packets"] = s.packets;
    d["payload_bytes"] = s.payload_bytes;
    d["encode_errors"] = s.encode_errors;
    d["nonfinite_samples"] = s.nonfinite_samples;
    d["input_frames_sent"] = s.input_frames_sent;
    d["padded_frames"] = s.padded_frames;
    d["silent_frames"] = s.silent_frames;
    d["clock_resets"] = s.clock_resets;
    d["voiced_frames"] = s.voiced_frames;
    d["last_voiced_ns"] = s.last_voiced_ns;
    d["sent_energy"] = s.sent_energy;
    d["sent_samples"] = s.sent_samples;
    d["send_intervals"] = s.send_intervals;
    d["send_interval_sum_ms"] = s.send_interval_sum_ms;
    d["send_interval_sumsq_ms2"] = s.send_interval_sumsq_ms2;
    d["send_interval_max_ms"] = s.send_interval_max_ms;
    d["send_intervals_over_30ms"] = s.send_intervals_over_30ms;
    d["pending_input_frames"] = uplink_.pending_input_frames();
    d["reference_underruns"] = s.reference_underruns;
    d["reference_resyncs"] = s.reference_resyncs;
    d["device_blocks"] = device_.blocks.load(std::memory_order_relaxed);
    d["device_input_overflows"] = device_.overflows.load(std::memory_order_relaxed);
    d["device_input_underflows"] = device_.underflows.load(std::memory_order_relaxed);
    d["device_late_blocks"] = device_.late_blocks.load(std::memory_order_relaxed);
    d["device_max_gap_ms"] = static_cast<double>(device_.max_gap_ns.load()) / 1e6;
    return d;
  }

  std::string repr() const {
    const UplinkConfig& c = uplink_.config();
    return "Uplink(input_rate=" + std::to_string(c.input_rate_hz) +
           ", channels=" + std::to_string(c.channels) + ", mode='" + mode_name(c.mode) + "')";
  }

  Uplink& native() { return uplink_; }
  std::atomic<bool>& network_busy() { return network_busy_; }
  std::atomic<bool>& capture_busy() { return capture_busy_; }
  DeviceCounters& device_counters() { return device_; }
  std::atomic<bool>& driven() { return driven_; }

 private:
  Uplink uplink_;
  DeviceCounters device_;
  std::vector<std::uint8_t> packet_;
  std::atomic<bool> capture_busy_{false};
  std::atomic<bool> network_busy_{false};
  std::atomic<bool> driven_{false};
};

class PyDownlink {
 public:
  explicit PyDownlink(const DownlinkConfig& config) : downlink_(config) {}

  bool push_rtp(std::uint16_t seq, std::uint32_t timestamp, const py::bytes& payload,
                std::int64_t arrival_ns) {
    if (downlink_.config().mode != PipelineMode::Opus) {
      throw py::value_error("push_rtp needs a Downlink in 'opus' mode");
    }
    ExclusiveUse guard(network_busy_, "Downlink.push_rtp");
    char* data = nullptr;
    py::ssize_t len = 0;
    if (PYBIND11_BYTES_AS_STRING_AND_SIZE(payload.ptr(), &data, &len) != 0) {
      throw py::error_already_set();
    }
    return downlink_.push_rtp(seq, timestamp, reinterpret_cast<const std::uint8_t*>(data),
                              static_cast<std::size_t>(len), arrival_ns);
  }

  std::size_t push_pcm(const py::array& pcm) {
    if (downlink_.config().mode != PipelineMode::Pcm16) {
      throw py::value_error("push_pcm needs a Downlink in 'pcm16' mode");
    }
    ExclusiveUse guard(network_busy_, "Downlink.push_pcm");
    const std::size_t frames = check_audio<std::int16_t>(pcm, downlink_.config().channels, "pcm");
    const std::int16_t* src = static_cast<const std::int16_t*>(pcm.data());
    py::gil_scoped_release nogil;
    return downlink_.push_pcm(src, frames);
  }

  py::array_t<float> pull(std::size_t frames, std::int64_t now_ns) {
    check_frames(frames);
    py::array_t<float> out = new_audio<float>(frames, downlink_.config().channels);
    float* dst = out.mutable_data();
    pull_raw(dst, frames, now_ns);
    return out;
  }

  void pull_into(const py::array& out, std::int64_t now_ns) {
    if (!out.writeable()) throw py::value_error("out must be writeable");
    const std::size_t frames = check_audio<float>(out, downlink_.config().channels, "out");
    check_frames(frames);
    pull_raw(static_cast<float*>(const_cast<void*>(out.data())), frames, now_ns);
  }

  // A sound device's output callback: fills `out` from the downlink, timed by the steady clock
  // (the device is the playout clock), and counts PortAudio's status flags.
  // At the device rate (set_device_rate), converted natively when it is not the output rate.
  void pull_into_device(const py::array& out, unsigned status) {
    const std::int64_t now_ns = steady_now_ns();
    if (!out.writeable()) throw py::value_error("out must be writeable");
    const std::size_t frames = check_audio<float>(out, downlink_.config().channels, "out");
    const int rate = downlink_.device_rate_hz() != 0 ? downlink_.device_rate_hz()
                                                     : downlink_.config().output_rate_hz;
    if (frames > static_cast<std::size_t>(rate)) {
      throw py::value_error("pull: at most one second of audio per call");
    }
    device_.count(status, kOutputUnderflow, kOutputOverflow, now_ns, frames, rate);
    if (driven_.load(std::memory_order_acquire)) {
      throw std::runtime_error("Downlink.pull: a PlayoutDriver owns this Downlink's playout side");
    }
    ExclusiveUse guard(playout_busy_, "Downlink.pull_into_device");
    float* dst = static_cast<float*>(const_cast<void*>(out.data()));
    py::gil_scoped_release nogil;
    downlink_.pull_device(dst, frames, now_ns);
  }

  void set_device_rate(int rate_hz) {
    ExclusiveUse guard(playout_busy_, "Downlink.set_device_rate");
    downlink_.set_device_rate(rate_hz);
  }

  void flush() { downlink_.request_flush(); }

  py::dict stats() const {
    const DownlinkStats s = downlink_.stats();
    py::dict d;
    d["jitter"] = s.jitter;
    d["packets_queued"] = s.packets_queued;
    d["packets_dropped_queue_full"] = s.packets_dropped_queue_full;
    d["packets_dropped_oversized"] = s.packets_dropped_oversized;
    d["samples_pulled"] = s.samples_pulled;
    d["media_samples_played"] = s.media_samples_played;
    d["flushes"] = s.flushes;
    d["pcm_underruns"] = s.pcm_underruns;
    d["device_blocks"] = device_.blocks.load(std::memory_order_relaxed);
    d["device_output_underflows"] = device_.underflows.load(std::memory_order_relaxed);
    d["device_output_overflows"] = device_.overflows.load(std::memory_order_relaxed);
    d["device_late_blocks"] = device_.late_blocks.load(std::memory_order_relaxed);
    d["device_max_gap_ms"] = static_cast<double>(device_.max_gap_ns.load()) / 1e6;
    d["voice_onsets"] = s.voice_onsets;
    // The onsets still held, oldest first, each with its index in the count.
    py::list onsets;
    const std::uint64_t held =
        std::min<std::uint64_t>(s.voice_onsets, DownlinkStats::kOnsetHistory);
    for (std::uint64_t i = s.voice_onsets - held; i < s.voice_onsets; ++i) {
      const std::size_t k = static_cast<std::size_t>(i % DownlinkStats::kOnsetHistory);
      py::dict o;
      o["index"] = i;
      o["play_ns"] = s.onset_play_ns[k];
      o["block_play_ns"] = s.onset_block_play_ns[k];
      o["jb_ns"] = s.onset_jb_ns[k];
      o["arrival_ns"] = s.onset_arrival_ns[k];
      onsets.append(o);
    }
    d["onsets"] = onsets;
    d["last_voiced_ns"] = s.last_voiced_ns;
    d["output_energy"] = s.output_energy;
    return d;
  }

  std::string repr() const {
    const DownlinkConfig& c = downlink_.config();
    return "Downlink(output_rate=" + std::to_string(c.output_rate_hz) +
           ", channels=" + std::to_string(c.channels) + ", mode='" + mode_name(c.mode) + "')";
  }

  Downlink& native() { return downlink_; }
  std::atomic<bool>& network_busy() { return network_busy_; }
  std::atomic<bool>& playout_busy() { return playout_busy_; }
  std::atomic<bool>& driven_flag() { return driven_; }
  DeviceCounters& device_counters() { return device_; }
  std::atomic<bool>& driven() { return driven_; }

 private:
  void check_frames(std::size_t frames) const {
    if (frames > static_cast<std::size_t>(downlink_.config().output_rate_hz)) {
      throw py::value_error("pull: at most one second of audio per call");
    }
  }

  void pull_raw(float* dst, std::size_t frames, std::int64_t now_ns) {
    if (driven_.load(std::memory_order_acquire)) {
      throw std::runtime_error("Downlink.pull: a PlayoutDriver owns this Downlink's playout side");
    }
    ExclusiveUse guard(playout_busy_, "Downlink.pull");
    py::gil_scoped_release nogil;
    downlink_.pull(dst, frames, now_ns);
  }

  Downlink downlink_;
  DeviceCounters device_;
  std::atomic<bool> network_busy_{false};
  std::atomic<bool> playout_busy_{false};
  std::atomic<bool> driven_{false};
};

// Reads the ring a driver writes (or writes the ring a driver reads) from Python.
template <typename Driver>
class PyDriverBase {
 protected:
  static std::size_t ring_frames(int rate_hz, int ring_ms) {
    if (ring_ms < 40 || ring_ms > 600000) {
      throw py::value_error("ring_ms must be between 40 and 600000, got " +
                            std::to_string(ring_ms));
    }
    return static_cast<std::size_t>(rate_hz) * static_cast<std::size_t>(ring_ms) / 1000;
  }
};

class PyPlayoutDriver : PyDriverBase<PlayoutDriver> {
 public:
  PyPlayoutDriver(PyDownlink& downlink, int frame_ms, int ring_ms)
      : downlink_(downlink),
        driver_(downlink.native(), frame_ms,
                ring_frames(downlink.native().config().output_rate_hz, ring_ms)) {}

  ~PyPlayoutDriver() { stop(); }

  void start() {
    if (driver_.running()) return;
    if (downlink_.driven().exchange(true)) {
      throw std::runtime_error("this Downlink already has a running PlayoutDriver");
    }
    driver_.start();
  }

  void stop() {
    if (!driver_.running()) return;
    {
      py::gil_scoped_release nogil;
      driver_.stop();
    }
    downlink_.driven().store(false, std::memory_order_release);
  }

  py::array read(std::size_t frames) {
    ExclusiveUse guard(reader_busy_, "PlayoutDriver.read");
    SpscRing<float>& ring = driver_.output();
    const std::size_t n = std::min(frames, ring.available_frames());
    py::array_t<float> out = new_audio<float>(n, static_cast<int>(ring.channels()));
    float* dst = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      ring.read(dst, n);
    }
    return out;  // with the GIL held: returning copies a Python reference
  }

  std::size_t available() { return driver_.output().available_frames(); }
  bool running() const { return driver_.running(); }
  std::uint64_t ticks() const { return driver_.ticks(); }
  std::uint64_t late_ticks() const { return driver_.late_ticks(); }
  std::uint64_t overrun_frames() { return driver_.output().overrun_frames(); }

 private:
  PyDownlink& downlink_;
  PlayoutDriver driver_;
  std::atomic<bool> reader_busy_{false};
};

class PyCaptureDriver : PyDriverBase<CaptureDriver> {
 public:
  PyCaptureDriver(PyUplink& uplink, int frame_ms, int ring_ms, bool pad_silence)
      : uplink_(uplink),
        driver_(uplink.native(), frame_ms,
                ring_frames(uplink.native().config().input_rate_hz, ring_ms), pad_silence) {}

  ~PyCaptureDriver() { stop(); }

  void start() {
    if (driver_.running()) return;
    if (uplink_.driven().exchange(true)) {
      throw std::runtime_error("this Uplink already has a running CaptureDriver");
    }
    driver_.start();
  }

  void stop() {
    if (!driver_.running()) return;
    {
      py::gil_scoped_release nogil;
      driver_.stop();
    }
    uplink_.driven().store(false, std::memory_order_release);
  }

  std::size_t write(const py::array& pcm) {
    ExclusiveUse guard(writer_busy_, "CaptureDriver.write");
    SpscRing<float>& ring = driver_.source();
    const std::size_t frames = check_audio<float>(pcm, static_cast<int>(ring.channels()), "pcm");
    const float* src = static_cast<const float*>(pcm.data());
    py::gil_scoped_release nogil;
    return ring.write(src, frames);
  }

  std::size_t free() { return driver_.source().free_frames(); }
  std::size_t pending() {
    SpscRing<float>& ring = driver_.source();
    return static_cast<std::size_t>(ring.frames_written() - ring.frames_read());
  }
  bool running() const { return driver_.running(); }
  std::uint64_t ticks() const { return driver_.ticks(); }
  std::uint64_t silence_frames() const { return driver_.silence_frames(); }

 private:
  PyUplink& uplink_;
  CaptureDriver driver_;
  std::atomic<bool> writer_busy_{false};
};

// ------------------------------------------------------------- native sound-device callbacks
//
// PortAudio's callbacks without Python: the PortAudio library that sounddevice loaded (its path
// is given) is opened again with dlopen, which returns the same loaded library and so the same
// device list and indices; streams opened here call the Uplink / Downlink from PortAudio's own
// thread, so an application that holds the GIL cannot delay them. The few declarations below
// are PortAudio v19's stable C ABI (portaudio.h), used at run time only: nothing links against
// PortAudio at build time.

#ifndef _WIN32
namespace pa {
using PaError = int;
using PaDeviceIndex = int;
using PaTime = double;
using PaSampleFormat = unsigned long;
using PaStreamFlags = unsigned long;
using PaStreamCallbackFlags = unsigned long;
struct PaStreamParameters {
  PaDeviceIndex device;
  int channelCount;
  PaSampleFormat sampleFormat;
  PaTime suggestedLatency;
  void* hostApiSpecificStreamInfo;
};
struct PaStreamCallbackTimeInfo {
  PaTime inputBufferAdcTime;
  PaTime currentTime;
  PaTime outputBufferDacTime;
};
struct PaStreamInfo {
  int structVersion;
  PaTime inputLatency;
  PaTime outputLatency;
  double sampleRate;
};
using PaStreamCallback = int(const void*, void*, unsigned long, const PaStreamCallbackTimeInfo*,
                             PaStreamCallbackFlags, void*);
constexpr PaSampleFormat kFloat32 = 0x00000001;
constexpr PaStreamFlags kClipOff = 0x00000001;
constexpr PaStreamFlags kDitherOff = 0x00000002;
constexpr int kContinue = 0;

struct Library {
  PaError (*Initialize)();
  PaError (*Terminate)();
  PaError (*OpenStream)(void**, const PaStreamParameters*, const PaStreamParameters*, double,
                        unsigned long, PaStreamFlags, PaStreamCallback*, void*);
  PaError (*StartStream)(void*);
  PaError (*AbortStream)(void*);
  PaError (*CloseStream)(void*);
  PaError (*IsStreamActive)(void*);
  const PaStreamInfo* (*GetStreamInfo)(void*);
  const char* (*GetErrorText)(PaError);
};

template <typename F>
void load(void* handle, const char* name, F& fn) {
  void* sym = dlsym(handle, name);
  if (sym == nullptr) throw std::runtime_error(std::string("PortAudio has no ") + name);
  fn = reinterpret_cast<F>(sym);
}

// Loaded once per path and never unloaded (streams may outlive any one owner).
const Library& library(const std::string& path) {
  static std::mutex mu;
  static std::vector<std::pair<std::string, std::unique_ptr<Library>>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  for (auto& entry : loaded) {
    if (entry.first == path) return *entry.second;
  }
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    throw std::runtime_error("cannot load PortAudio from '" + path + "': " + (err ? err : "?"));
  }
  auto lib = std::make_unique<Library>();
  load(handle, "Pa_Initialize", lib->Initialize);
  load(handle, "Pa_Terminate", lib->Terminate);
  load(handle, "Pa_OpenStream", lib->OpenStream);
  load(handle, "Pa_StartStream", lib->StartStream);
  load(handle, "Pa_AbortStream", lib->AbortStream);
  load(handle, "Pa_CloseStream", lib->CloseStream);
  load(handle, "Pa_IsStreamActive", lib->IsStreamActive);
  load(handle, "Pa_GetStreamInfo", lib->GetStreamInfo);
  load(handle, "Pa_GetErrorText", lib->GetErrorText);
  loaded.emplace_back(path, std::move(lib));
  return *loaded.back().second;
}
}  // namespace pa

class PyNativeAudioStream {
 public:
  PyNativeAudioStream(const std::string& library_path, const std::string& kind, int device,
                      int rate_hz, int block_frames, double latency_s, py::object target)
      : target_(std::move(target)), rate_hz_(rate_hz) {
    if (kind != "input" && kind != "output") {
      throw py::value_error("kind must be 'input' or 'output', not '" + kind + "'");
    }
    input_ = kind == "input";
    if (device < 0) throw py::value_error("device must be a PortAudio device index >= 0");
    if (rate_hz < 8000 || rate_hz > 192000) throw py::value_error("rate_hz must be 8000..192000");
    if (block_frames < 1 || block_frames > rate_hz) {
      throw py::value_error("block_frames must be 1..rate_hz");
    }
    if (!(latency_s >= 0.0 && latency_s <= 2.0)) throw py::value_error("latency_s must be 0..2");
    if (input_) {
      if (!py::isinstance<PyUplink>(target_)) {
        throw py::type_error("an input stream feeds an Uplink");
      }
      up_ = &target_.cast<PyUplink&>();
    } else {
      if (!py::isinstance<PyDownlink>(target_)) {
        throw py::type_error("an output stream plays a Downlink");
      }
      down_ = &target_.cast<PyDownlink&>();
    }
    lib_ = &pa::library(library_path);
    pa::PaStreamParameters params{device, 1, pa::kFloat32, latency_s, nullptr};
    py::gil_scoped_release nogil;
    check(lib_->Initialize(), "Pa_Initialize");
    initialized_ = true;
    const pa::PaError err =
        lib_->OpenStream(&stream_, input_ ? &params : nullptr, input_ ? nullptr : &params,
                         static_cast<double>(rate_hz), static_cast<unsigned long>(block_frames),
                         pa::kClipOff | pa::kDitherOff, &PyNativeAudioStream::callback, this);
    if (err != 0) {
      stream_ = nullptr;
      lib_->Terminate();
      initialized_ = false;
      check(err, "Pa_OpenStream");
    }
  }

  ~PyNativeAudioStream() {
    py::gil_scoped_release nogil;
    close_nogil();
  }

  void start() {
    if (stream_ == nullptr) throw std::runtime_error("the stream is closed");
    py::gil_scoped_release nogil;
    check(lib_->StartStream(stream_), "Pa_StartStream");
  }

  void abort() {
    if (stream_ == nullptr) return;
    py::gil_scoped_release nogil;
    lib_->AbortStream(stream_);
  }

  void close() {
    py::gil_scoped_release nogil;
    close_nogil();
  }

  bool active() const { return stream_ != nullptr && lib_->IsStreamActive(stream_) == 1; }

  double latency() const {
    if (stream_ == nullptr) return 0.0;
    const pa::PaStreamInfo* info = lib_->GetStreamInfo(stream_);
    if (info == nullptr) return 0.0;
    return input_ ? info->inputLatency : info->outputLatency;
  }

  std::uint64_t callbacks() const { return callbacks_.load(std::memory_order_relaxed); }
  std::uint64_t contention() const { return contention_.load(std::memory_order_relaxed); }

 private:
  void check(pa::PaError err, const char* what) const {
    if (err != 0) {
      const char* text = lib_->GetErrorText(err);
      throw std::runtime_error(std::string(what) + " failed: " + (text ? text : "?"));
    }
  }

  void close_nogil() {
    if (stream_ != nullptr) {
      lib_->AbortStream(stream_);
      lib_->CloseStream(stream_);
      stream_ = nullptr;
    }
    if (initialized_) {
      lib_->Terminate();
      initialized_ = false;
    }
  }

  // PortAudio's thread: one native call, no Python, no lock, no allocation.
  static int callback(const void* in, void* out, unsigned long frames,
                      const pa::PaStreamCallbackTimeInfo*, pa::PaStreamCallbackFlags status,
                      void* user) {
    auto* self = static_cast<PyNativeAudioStream*>(user);
    self->callbacks_.fetch_add(1, std::memory_order_relaxed);
    const std::int64_t now_ns = steady_now_ns();
    const auto n = static_cast<std::size_t>(frames);
    const auto flags = static_cast<unsigned>(status);
    if (self->input_) {
      PyUplink& up = *self->up_;
      up.device_counters().count(flags, kInputUnderflow, kInputOverflow, now_ns, n, self->rate_hz_);
      if (in == nullptr || up.driven().load(std::memory_order_acquire)) return pa::kContinue;
      TryOwn claim(up.capture_busy());
      if (!claim.owned) {
        self->contention_.fetch_add(1, std::memory_order_relaxed);
        return pa::kContinue;
      }
      up.native().push_device(static_cast<const float*>(in), n);
      return pa::kContinue;
    }
    PyDownlink& down = *self->down_;
    auto* dst = static_cast<float*>(out);
    down.device_counters().count(flags, kOutputUnderflow, kOutputOverflow, now_ns, n,
                                 self->rate_hz_);
    TryOwn claim(down.playout_busy());
    if (!claim.owned || down.driven_flag().load(std::memory_order_acquire)) {
      if (!claim.owned) self->contention_.fetch_add(1, std::memory_order_relaxed);
      std::fill(dst, dst + n, 0.0f);
      return pa::kContinue;
    }
    down.native().pull_device(dst, n, now_ns);
    return pa::kContinue;
  }

  struct TryOwn {
    explicit TryOwn(std::atomic<bool>& f) : flag(f) {
      owned = !flag.exchange(true, std::memory_order_acquire);
    }
    ~TryOwn() {
      if (owned) flag.store(false, std::memory_order_release);
    }
    std::atomic<bool>& flag;
    bool owned;
  };

  py::object target_;
  PyUplink* up_ = nullptr;
  PyDownlink* down_ = nullptr;
  const pa::Library* lib_ = nullptr;
  void* stream_ = nullptr;
  bool initialized_ = false;
  bool input_ = true;
  int rate_hz_;
  std::atomic<std::uint64_t> callbacks_{0};
  std::atomic<std::uint64_t> contention_{0};
};
#endif  // _WIN32

void init_native_audio_stream(py::module_& m) {
#ifndef _WIN32
  py::class_<PyNativeAudioStream>(m, "NativeAudioStream", R"doc(
A PortAudio stream whose callback is native: ``kind`` "input" pushes each block into ``target``
(an Uplink, as push_from_device does), "output" fills it from ``target`` (a Downlink, as
pull_into_device does), on PortAudio's thread without the GIL. ``library`` is the path of the
PortAudio library already loaded by sounddevice (``sounddevice._libname``), so ``device`` is one
of its indices. Mono float32, ``block_frames`` per callback at ``rate_hz``, ``latency_s``
suggested. Status flags are counted in the target's device statistics.
)doc")
      .def(py::init<const std::string&, const std::string&, int, int, int, double, py::object>(),
           py::arg("library"), py::arg("kind"), py::arg("device"), py::arg("rate_hz"),
           py::arg("block_frames"), py::arg("latency_s"), py::arg("target"))
      .def("start", &PyNativeAudioStream::start)
      .def("abort", &PyNativeAudioStream::abort)
      .def("close", &PyNativeAudioStream::close)
      .def_property_readonly("active", &PyNativeAudioStream::active)
      .def_property_readonly("latency", &PyNativeAudioStream::latency)
      .def_property_readonly("callbacks", &PyNativeAudioStream::callbacks)
      .def_property_readonly("contention", &PyNativeAudioStream::contention);
  m.attr("native_audio_streams") = true;
#else
  m.attr("native_audio_streams") = false;
#endif
}

// ------------------------------------------------------------------ the native media path

sockaddr_storage parse_address(const std::string& host, int port, socklen_t& len) {
  if (port <= 0 || port > 65535) throw py::value_error("remote port must be in 1..65535");
  sockaddr_storage ss{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof(sockaddr_in);
    return ss;
  }
  std::string h = host;
  const auto pct = h.find('%');  // a scope suffix ("fe80::1%eth0")
  if (pct != std::string::npos) h = h.substr(0, pct);
  if (inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof(sockaddr_in6);
    return ss;
  }
  throw py::value_error("remote host must be a numeric IPv4 or IPv6 address, got '" + host + "'");
}

py::tuple address_tuple(const sockaddr_storage& ss) {
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof(text));
    return py::make_tuple(std::string(text), ntohs(a.sin6_port), ntohl(a.sin6_flowinfo),
                          a.sin6_scope_id);
  }
  const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
  inet_ntop(AF_INET, &a.sin_addr, text, sizeof(text));
  return py::make_tuple(std::string(text), ntohs(a.sin_port));
}

SrtpProfile parse_profile(const std::string& name) {
  for (SrtpProfile p :
       {SrtpProfile::Aes128CmSha1_80, SrtpProfile::AeadAes128Gcm, SrtpProfile::AeadAes256Gcm}) {
    if (srtp_profile_name(p) == name) return p;
  }
  throw py::value_error("unknown SRTP protection profile '" + name + "'");
}

std::vector<std::uint8_t> key_bytes(const py::bytes& b) {
  char* data = nullptr;
  py::ssize_t len = 0;
  if (PYBIND11_BYTES_AS_STRING_AND_SIZE(b.ptr(), &data, &len) != 0) throw py::error_already_set();
  return std::vector<std::uint8_t>(reinterpret_cast<std::uint8_t*>(data),
                                   reinterpret_cast<std::uint8_t*>(data) + len);
}

class PyMediaCall {
 public:
  PyMediaCall(int fd, const std::string& host, int port, const std::string& profile,
              const py::bytes& tx_key, const py::bytes& rx_key, std::uint32_t ssrc,
              int payload_type, py::object uplink, py::object downlink, int seq_offset,
              std::uint32_t timestamp_offset, const std::string& mid, int mid_id,
              int abs_send_time_id, const std::string& cname, int rtcp_interval_ms,
              int python_slots, std::uint32_t seed)
      : uplink_obj_(std::move(uplink)), downlink_obj_(std::move(downlink)) {
    MediaCallConfig c;
    c.fd = fd;
    c.remote = parse_address(host, port, c.remote_len);
    c.profile = parse_profile(profile);
    c.tx_key = key_bytes(tx_key);
    c.rx_key = key_bytes(rx_key);
    if (payload_type < 0 || payload_type > 127) {
      throw py::value_error("payload_type must be in 0..127");
    }
    if (seq_offset < 0 || seq_offset > 65535) throw py::value_error("seq_offset must be 0..65535");
    if (mid.size() > rtp::kMaxMidBytes) throw py::value_error("mid is longer than 16 bytes");
    if (mid_id < 0 || mid_id > 14 || abs_send_time_id < 0 || abs_send_time_id > 14) {
      throw py::value_error("header extension ids must be in 0..14 (0: not used)");
    }
    if (cname.size() > 255) throw py::value_error("cname is longer than 255 bytes");
    c.ssrc = ssrc;
    c.payload_type = static_cast<std::uint8_t>(payload_type);
    c.seq_offset = static_cast<std::uint16_t>(seq_offset);
    c.timestamp_offset = timestamp_offset;
    c.extensions.mid_id = mid.empty() ? 0 : mid_id;
    std::memcpy(c.extensions.mid, mid.data(), mid.size());
    c.extensions.mid_len = mid.size();
    c.extensions.abs_send_time_id = abs_send_time_id;
    c.cname = cname;
    c.rtcp_interval_ms = rtcp_interval_ms;
    c.python_slots = python_slots;
    c.seed = seed;
    Uplink* up = nullptr;
    std::atomic<bool>* up_busy = nullptr;
    Downlink* down = nullptr;
    std::atomic<bool>* down_busy = nullptr;
    if (!uplink_obj_.is_none()) {
      auto& u = uplink_obj_.cast<PyUplink&>();
      up = &u.native();
      up_busy = &u.network_busy();
    }
    if (!downlink_obj_.is_none()) {
      auto& d = downlink_obj_.cast<PyDownlink&>();
      down = &d.native();
      down_busy = &d.network_busy();
    }
    try {
      call_ = std::make_shared<MediaCall>(c, up, up_busy, down, down_busy);
    } catch (const std::invalid_argument& e) {
      std::fill(c.tx_key.begin(), c.tx_key.end(), 0);
      std::fill(c.rx_key.begin(), c.rx_key.end(), 0);
      throw py::value_error(e.what());
    }
    std::fill(c.tx_key.begin(), c.tx_key.end(), 0);
    std::fill(c.rx_key.begin(), c.rx_key.end(), 0);
    profile_ = profile;
    host_ = host;
    port_ = port;
  }

  ~PyMediaCall() {
    // The media thread must let go of the Uplink and Downlink before they may be freed.
    if (started_) {
      py::gil_scoped_release nogil;
      MediaEngine::instance().remove(call_);
    }
  }

  void start() {
    if (stopped_) throw std::runtime_error("MediaCall.start: the call was stopped");
    if (started_) return;
    MediaEngine::instance().add(call_);
    started_ = true;
  }

  void stop() {
    if (started_) {
      py::gil_scoped_release nogil;
      MediaEngine::instance().remove(call_);
    }
    started_ = false;
    stopped_ = true;
    call_->close_descriptors();
  }

  py::object pop_datagram() {
    std::uint8_t buf[MediaCall::kMaxDatagram];
    std::size_t len = 0;
    sockaddr_storage from{};
    socklen_t from_len = 0;
    if (!call_->pop_datagram(buf, sizeof(buf), len, from, from_len)) return py::none();
    return py::make_tuple(py::bytes(reinterpret_cast<const char*>(buf), len), address_tuple(from));
  }

  py::dict stats() const {
    const MediaCallStats s = call_->stats();
    py::dict d;
    d["packets_sent"] = s.packets_sent;
    d["payload_bytes_sent"] = s.payload_bytes_sent;
    d["bytes_sent"] = s.bytes_sent;
    d["send_errors"] = s.send_errors;
    d["send_would_block"] = s.send_would_block;
    d["protect_errors"] = s.protect_errors;
    d["uplink_contention"] = s.uplink_contention;
    d["rtcp_sent"] = s.rtcp_sent;
    d["datagrams_received"] = s.datagrams_received;
    d["packets_received"] = s.packets_received;
    d["payload_bytes_received"] = s.payload_bytes_received;
    d["packets_lost"] = s.packets_lost;
    d["jitter_ms"] = s.jitter_ms;
    d["srtp_errors"] = s.srtp_errors;
    d["srtcp_errors"] = s.srtcp_errors;
    d["malformed"] = s.malformed;
    d["other_payload_type"] = s.other_payload_type;
    d["foreign_source"] = s.foreign_source;
    d["ssrc_changes"] = s.ssrc_changes;
    d["remote_ssrc"] = s.remote_ssrc;
    d["gated"] = s.gated;
    d["downlink_refused"] = s.downlink_refused;
    d["downlink_contention"] = s.downlink_contention;
    d["rtcp_received"] = s.rtcp_received;
    d["bye_received"] = s.bye_received;
    d["to_python"] = s.to_python;
    d["to_python_dropped"] = s.to_python_dropped;
    d["oversized"] = s.oversized;
    d["last_rtp_ns"] = s.last_rtp_ns;
    d["last_rtcp_ns"] = s.last_rtcp_ns;
    d["reports_received"] = s.reports_received;
    d["rtt_ms"] = s.rtt_ms < 0 ? py::object(py::none()) : py::object(py::float_(s.rtt_ms));
    d["remote_fraction_lost"] = s.remote_fraction_lost;
    d["remote_packets_lost"] = s.remote_packets_lost;
    d["remote_jitter_ms"] = s.remote_jitter_ms;
    d["loss_hint_applied"] = s.loss_hint_applied;
    return d;
  }

  std::string repr() const {
    return "MediaCall(remote='" + host_ + ":" + std::to_string(port_) + "', profile='" + profile_ +
           "', " + (started_ ? "running" : (stopped_ ? "stopped" : "new")) + ")";
  }

  MediaCall& call() { return *call_; }
  bool started() const { return started_; }

 private:
  py::object uplink_obj_;
  py::object downlink_obj_;
  std::shared_ptr<MediaCall> call_;
  bool started_ = false;
  bool stopped_ = false;
  std::string profile_;
  std::string host_;
  int port_ = 0;
};

void init_media(py::module_& m) {
  m.def(
      "srtp_profiles",
      [] {
        py::list out;
        for (SrtpProfile p : {SrtpProfile::AeadAes256Gcm, SrtpProfile::AeadAes128Gcm,
                              SrtpProfile::Aes128CmSha1_80}) {
          if (srtp_profile_supported(p)) out.append(srtp_profile_name(p));
        }
        return out;
      },
      "The DTLS-SRTP protection profiles the native media path can use, preferred first.");
  m.def(
      "srtp_key_salt_length",
      [](const std::string& profile) { return srtp_key_salt_length(parse_profile(profile)); },
      py::arg("profile"), "Bytes of master key plus master salt of a protection profile.");
  m.def("srtp_version", &srtp_library_version, "The libsrtp2 version the core is linked with.");
  m.def(
      "media_engine_stats",
      [] {
        const MediaEngineStats s = MediaEngine::instance().stats();
        py::dict d;
        d["calls"] = s.calls;
        d["running"] = s.running;
        d["threads"] = s.threads;
        d["max_threads"] = s.max_threads;
        d["loops"] = s.loops;
        d["threads_started"] = s.threads_started;
        return d;
      },
      "The process's media threads: calls served, threads running (of max_threads), loop "
      "iterations.");

  py::class_<PyMediaCall>(m, "MediaCall", R"doc(
One WebRTC call's RTP/RTCP/SRTP on the process's native media thread (no GIL, no Python per
packet).

``fd`` is the ICE-selected UDP socket (duplicated; the caller keeps its own descriptor and must
stop reading it); ``host``/``port`` the selected remote address. ``tx_key``/``rx_key`` are the
DTLS-SRTP master key + salt of each direction for ``profile`` (see ``srtp_profiles()``); they
are not kept in Python-visible state. Outbound RTP is paced by ``uplink.pop_due`` (the Uplink
must not be drained elsewhere meanwhile); inbound Opus RTP of ``payload_type`` goes to
``downlink``'s packet queue. Datagrams that are not RTP/RTCP (STUN, DTLS) wait for
``pop_datagram()``; ``notify_fd`` is readable when some do. ``start()`` puts the call on the
media thread, ``stop()`` takes it off (and returns once that thread let go).
)doc")
      .def(
          py::init<int, const std::string&, int, const std::string&, const py::bytes&,
                   const py::bytes&, std::uint32_t, int, py::object, py::object, int, std::uint32_t,
                   const std::string&, int, int, const std::string&, int, int, std::uint32_t>(),
          py::arg("fd"), py::arg("host"), py::arg("port"), py::arg("profile"), py::arg("tx_key"),
          py::arg("rx_key"), py::arg("ssrc"), py::arg("payload_type"), py::arg("uplink"),
          py::arg("downlink"), py::kw_only(), py::arg("seq_offset") = 0,
          py::arg("timestamp_offset") = 0, py::arg("mid") = "", py::arg("mid_id") = 0,
          py::arg("abs_send_time_id") = 0, py::arg("cname") = "",
          py::arg("rtcp_interval_ms") = 1000, py::arg("python_slots") = 128, py::arg("seed") = 0)
      .def("start", &PyMediaCall::start)
      .def("stop", &PyMediaCall::stop)
      .def("pop_datagram", &PyMediaCall::pop_datagram,
           "The next queued non-media datagram as (data, address), or None.")
      .def("stats", &PyMediaCall::stats)
      .def(
          "set_loss_hint",
          [](PyMediaCall& c, int percent) { c.call().set_loss_hint(std::clamp(percent, 0, 100)); },
          py::arg("percent"))
      .def_property(
          "send_open", [](PyMediaCall& c) { return c.call().send_open(); },
          [](PyMediaCall& c, bool open) { c.call().set_send_open(open); })
      .def_property(
          "recv_open", [](PyMediaCall& c) { return c.call().recv_open(); },
          [](PyMediaCall& c, bool open) { c.call().set_recv_open(open); })
      .def_property_readonly("notify_fd", [](PyMediaCall& c) { return c.call().notify_fd(); })
      .def_property_readonly("running", &PyMediaCall::started)
      .def("__repr__", &PyMediaCall::repr);
}

}  // namespace

void init_pipelines(py::module_& m) {
  py::class_<PyUplink>(m, "Uplink", R"doc(
Microphone-to-network pipeline: capture ring, resampling to the transport rate, exact frames,
Opus with in-band FEC (or 24 kHz PCM16 frames in ``mode="pcm16"``), RTP timestamps from the
sample count.

``push`` belongs to the capture thread; ``pop_packet``, ``finish`` and the setters to the network
thread; ``stats`` to any thread.
)doc")
      .def(py::init([](int input_rate, int channels, const std::string& mode, int frame_ms,
                       int bitrate, int complexity, bool fec, int packet_loss_perc, bool dtx,
                       int ring_ms, std::uint32_t initial_timestamp, std::uint16_t initial_seq,
                       int notify_fd, int partial_wait_ms, int max_lag_ms) {
             UplinkConfig c;
             c.input_rate_hz = input_rate;
             c.channels = channels;
             c.mode = parse_mode(mode);
             c.frame_ms = frame_ms;
             c.bitrate_bps = bitrate;
             c.complexity = complexity;
             c.fec = fec;
             c.packet_loss_perc = packet_loss_perc;
             c.dtx = dtx;
             c.ring_ms = ring_ms;
             c.initial_timestamp = initial_timestamp;
             c.initial_seq = initial_seq;
             c.notify_fd = notify_fd;
             c.partial_wait_ms = partial_wait_ms;
             c.max_lag_ms = max_lag_ms;
             return std::make_unique<PyUplink>(c);
           }),
           py::arg("input_rate"), py::arg("channels") = 1, py::arg("mode") = "opus", py::kw_only(),
           py::arg("frame_ms") = 20, py::arg("bitrate") = 32000, py::arg("complexity") = 9,
           py::arg("fec") = true, py::arg("packet_loss_perc") = 10, py::arg("dtx") = false,
           py::arg("ring_ms") = 2000, py::arg("initial_timestamp") = 0, py::arg("initial_seq") = 0,
           py::arg("notify_fd") = -1, py::arg("partial_wait_ms") = UplinkConfig{}.partial_wait_ms,
           py::arg("max_lag_ms") = UplinkConfig{}.max_lag_ms)
      .def("push", &PyUplink::push, py::arg("pcm"),
           "Capture thread: queues float32 or int16 frames at the input rate; returns the "
           "frames accepted (the rest are dropped and counted).")
      .def("pop_packet", &PyUplink::pop_packet,
           "Network thread: (payload, rtp_timestamp, seq) of the next frame, or None.")
      .def("finish", &PyUplink::finish,
           "Network thread: pads the last partial frame with silence so it can be popped.")
      .def("pop_due", &PyUplink::pop_due, py::arg("now_ns"),
           "Network thread, on the sample clock: (payload, rtp_timestamp, seq) when a packet is "
           "due at now_ns (input, input padded with silence, or silence), else None.")
      .def_property_readonly("next_due_ns", &PyUplink::next_due_ns,
                             "When the next pop_due() packet is due (monotonic ns), or None "
                             "before the first call.")
      .def("take_input", &PyUplink::take_input, py::arg("max_frames"),
           "Network thread: removes and returns up to max_frames of input still waiting.")
      .def("set_packet_loss_perc", &PyUplink::set_packet_loss_perc, py::arg("percent"))
      .def("set_bitrate", &PyUplink::set_bitrate, py::arg("bps"))
      .def("set_fec", &PyUplink::set_fec, py::arg("enabled"))
      .def("set_dtx", &PyUplink::set_dtx, py::arg("enabled"))
      .def("push_from_device", &PyUplink::push_from_device, py::arg("pcm"), py::arg("status"),
           "A sound device's input callback: push(pcm), counting PortAudio's status flags "
           "(device_input_overflows/underflows in stats).")
      .def("set_device_rate", &PyUplink::set_device_rate, py::arg("rate"),
           "Before the first push_from_device: the device's rate, converted natively to the "
           "input rate.")
      .def("set_processing", &PyUplink::set_processing, py::kw_only(),
           py::arg("backend") = py::none(), py::arg("aec") = true,
           py::arg("noise_suppression") = true, py::arg("agc") = true, py::arg("high_pass") = true,
           py::arg("stream_delay_ms") = 0, py::arg("speex_filter_ms") = 200,
           py::arg("aec_suppression") = 1,
           "Any thread: echo cancellation, noise suppression, AGC and high-pass on the capture "
           "path (10 ms frames at the input rate, before resampling and encoding). The first "
           "call creates the processor (aec_suppression: the WebRTC canceller's suppression "
           "level, 0 low, 1 moderate, 2 high, fixed from then on); later calls switch the "
           "stages on or off.")
      .def(
          "set_echo_reference",
          [](PyUplink& u, PyDownlink& d, int lead_ms, int max_lead_ms) {
            u.native().set_echo_reference(d.native(), lead_ms, max_lead_ms);
          },
          py::arg("downlink"), py::kw_only(), py::arg("lead_ms") = 20, py::arg("max_lead_ms") = 120,
          py::keep_alive<1, 2>(),
          "Any thread, once: the echo canceller's far-end reference is what `downlink` hands to "
          "the speaker (its render tap), kept lead_ms ahead of the capture stream.")
      .def_property_readonly("processing_stats", &PyUplink::processing_stats,
                             "The voice processor's statistics, or None without processing.")
      .def_property_readonly("transport_rate",
                             [](PyUplink& u) { return u.native().transport_rate_hz(); })
      .def_property_readonly("input_rate",
                             [](PyUplink& u) { return u.native().config().input_rate_hz; })
      .def_property_readonly("mode",
                             [](PyUplink& u) { return mode_name(u.native().config().mode); })
      .def_property_readonly("frame_samples",
                             [](PyUplink& u) { return u.native().frame_samples(); })
      .def_property_readonly("input_frame_samples",
                             [](PyUplink& u) { return u.native().input_frame_samples(); })
      .def_property_readonly("stats", &PyUplink::stats)
      .def("__repr__", &PyUplink::repr);

  py::class_<PyDownlink>(m, "Downlink", R"doc(
Network-to-speaker pipeline: lock-free packet queue, adaptive jitter buffer (decode, FEC, PLC,
time stretching) and resampling to the output rate; ``mode="pcm16"`` takes 24 kHz PCM16 chunks
(the WebSocket transport) instead of RTP.

``push_rtp``/``push_pcm`` belong to the network thread; ``pull``/``pull_into`` to the playout
thread; ``flush``, ``stats`` and ``media_samples_played`` to any thread.
)doc")
      .def(py::init([](int output_rate, int channels, const std::string& mode, int min_delay_ms,
                       int max_delay_ms, int start_delay_ms, bool fec, int queue_packets,
                       int pcm_prebuffer_ms, int pcm_ring_ms) {
             DownlinkConfig c;
             c.output_rate_hz = output_rate;
             c.channels = channels;
             c.mode = parse_mode(mode);
             c.jitter.min_delay_ms = min_delay_ms;
             c.jitter.max_delay_ms = max_delay_ms;
             c.jitter.start_delay_ms = start_delay_ms;
             c.jitter.fec = fec;
             c.queue_packets = queue_packets;
             c.pcm_prebuffer_ms = pcm_prebuffer_ms;
             c.pcm_ring_ms = pcm_ring_ms;
             return std::make_unique<PyDownlink>(c);
           }),
           py::arg("output_rate"), py::arg("channels") = 1, py::arg("mode") = "opus", py::kw_only(),
           py::arg("min_delay_ms") = JitterBufferConfig{}.min_delay_ms,
           py::arg("max_delay_ms") = JitterBufferConfig{}.max_delay_ms,
           py::arg("start_delay_ms") = JitterBufferConfig{}.start_delay_ms, py::arg("fec") = true,
           py::arg("queue_packets") = 512, py::arg("pcm_prebuffer_ms") = 60,
           py::arg("pcm_ring_ms") = DownlinkConfig{}.pcm_ring_ms)
      .def("push_rtp", &PyDownlink::push_rtp, py::arg("seq"), py::arg("timestamp"),
           py::arg("payload"), py::arg("arrival_ns"),
           "Network thread: queues one RTP payload; False when it was dropped (counted).")
      .def("push_pcm", &PyDownlink::push_pcm, py::arg("pcm"),
           "Network thread: queues 24 kHz int16 audio; returns the frames accepted.")
      .def("pull", &PyDownlink::pull, py::arg("frames"), py::arg("now_ns"),
           "Playout thread: exactly `frames` frames of float32 audio at the output rate.")
      .def("pull_into", &PyDownlink::pull_into, py::arg("out"), py::arg("now_ns"))
      .def("set_device_rate", &PyDownlink::set_device_rate, py::arg("rate"),
           "Before the first pull_into_device: the device's rate, converted natively from the "
           "output rate.")
      .def("pull_into_device", &PyDownlink::pull_into_device, py::arg("out"), py::arg("status"),
           "A sound device's output callback: fills out on the steady clock, counting "
           "PortAudio's status flags (device_output_underflows/overflows in stats).")
      .def("flush", &PyDownlink::flush,
           "Any thread: drops all queued and buffered audio at the next pull (barge-in).")
      .def_property_readonly("decode_rate",
                             [](PyDownlink& d) { return d.native().decode_rate_hz(); })
      .def_property_readonly("output_rate",
                             [](PyDownlink& d) { return d.native().config().output_rate_hz; })
      .def_property_readonly("mode",
                             [](PyDownlink& d) { return mode_name(d.native().config().mode); })
      .def_property_readonly(
          "media_samples_played", [](PyDownlink& d) { return d.native().media_samples_played(); },
          "Output-rate samples of received audio played so far (not filler).")
      .def_property_readonly("stats", &PyDownlink::stats)
      .def("__repr__", &PyDownlink::repr);

  py::class_<PyPlayoutDriver>(m, "PlayoutDriver", R"doc(
A native playout clock for running without a sound card: every ``frame_ms`` on a monotonic clock
a native thread pulls one frame from the Downlink into a ring that ``read`` drains.
)doc")
      .def(py::init<PyDownlink&, int, int>(), py::arg("downlink"), py::arg("frame_ms") = 20,
           py::arg("ring_ms") = 10000, py::keep_alive<1, 2>())
      .def("start", &PyPlayoutDriver::start)
      .def("stop", &PyPlayoutDriver::stop)
      .def("read", &PyPlayoutDriver::read, py::arg("frames"))
      .def_property_readonly("available", &PyPlayoutDriver::available)
      .def_property_readonly("running", &PyPlayoutDriver::running)
      .def_property_readonly("ticks", &PyPlayoutDriver::ticks)
      .def_property_readonly("late_ticks", &PyPlayoutDriver::late_ticks)
      .def_property_readonly("overrun_frames", &PyPlayoutDriver::overrun_frames)
      .def(
          "__enter__",
          [](PyPlayoutDriver& d) -> PyPlayoutDriver& {
            d.start();
            return d;
          },
          py::return_value_policy::reference)
      .def("__exit__", [](PyPlayoutDriver& d, py::args) { d.stop(); });

  py::class_<PyCaptureDriver>(m, "CaptureDriver", R"doc(
A native capture clock for running without a microphone: every ``frame_ms`` on a monotonic clock
a native thread moves one frame from the ring ``write`` fills into the Uplink, padding with
silence when the ring runs short (as a live microphone keeps producing samples).
)doc")
      .def(py::init<PyUplink&, int, int, bool>(), py::arg("uplink"), py::arg("frame_ms") = 20,
           py::arg("ring_ms") = 60000, py::arg("pad_silence") = true, py::keep_alive<1, 2>())
      .def("start", &PyCaptureDriver::start)
      .def("stop", &PyCaptureDriver::stop)
      .def("write", &PyCaptureDriver::write, py::arg("pcm"),
           "Queues float32 input frames; returns how many fitted.")
      .def_property_readonly("free", &PyCaptureDriver::free)
      .def_property_readonly("pending", &PyCaptureDriver::pending)
      .def_property_readonly("running", &PyCaptureDriver::running)
      .def_property_readonly("ticks", &PyCaptureDriver::ticks)
      .def_property_readonly("silence_frames", &PyCaptureDriver::silence_frames)
      .def(
          "__enter__",
          [](PyCaptureDriver& d) -> PyCaptureDriver& {
            d.start();
            return d;
          },
          py::return_value_policy::reference)
      .def("__exit__", [](PyCaptureDriver& d, py::args) { d.stop(); });

  init_media(m);
  init_native_audio_stream(m);
}

}  // namespace rtvoice::bind
