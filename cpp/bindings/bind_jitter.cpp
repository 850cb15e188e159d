#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "common.hpp"
#include "rtvoice/audio_decoder.hpp"
#include "rtvoice/jitter_buffer.hpp"

namespace rtvoice::bind {
namespace {

constexpr int kActionCount = static_cast<int>(PlayoutAction::Silence) + 1;

class PyJitterBuffer {
 public:
  PyJitterBuffer(int sample_rate, int channels, const std::string& codec, int frame_ms,
                 int min_delay_ms, int max_delay_ms, int start_delay_ms, int capacity_packets,
                 int max_payload_bytes, bool fec)
      : codec_(codec) {
    JitterBufferConfig config;
    config.frame_ms = frame_ms;
    config.min_delay_ms = min_delay_ms;
    config.max_delay_ms = max_delay_ms;
    config.start_delay_ms = start_delay_ms;
    config.capacity_packets = capacity_packets;
    config.max_payload_bytes = max_payload_bytes;
    config.fec = fec;
    jb_ = std::make_unique<JitterBuffer>(make_decoder(codec, sample_rate, channels), config);
    for (int i = 0; i < kActionCount; ++i) {
      actions_[static_cast<std::size_t>(i)] =
          py::str(playout_action_name(static_cast<PlayoutAction>(i)));
    }
  }

  std::string insert(long long seq, long long timestamp, const py::buffer& payload,
                     long long arrival_ns) {
    if (seq < 0 || seq > 0xFFFF) {
      throw py::value_error("seq must be a 16-bit RTP sequence number (0..65535), got " +
                            std::to_string(seq));
    }
    if (timestamp < 0 || timestamp > 0xFFFFFFFFLL) {
      throw py::value_error("timestamp must be a 32-bit RTP timestamp (0..4294967295), got " +
                            std::to_string(timestamp));
    }
    py::buffer_info info = payload.request();
    if (info.itemsize != 1 || info.ndim != 1 || (info.size > 1 && info.strides[0] != 1)) {
      throw py::type_error(
          "payload must be contiguous bytes (bytes, bytearray, memoryview or a "
          "1-D uint8 array)");
    }
    ExclusiveUse guard(busy_, "JitterBuffer.insert");
    const auto* data = static_cast<const std::uint8_t*>(info.ptr);
    const auto bytes = static_cast<std::size_t>(info.size);
    InsertResult result;
    {
      py::gil_scoped_release nogil;
      result = jb_->insert(static_cast<std::uint16_t>(seq), static_cast<std::uint32_t>(timestamp),
                           data, bytes, static_cast<std::int64_t>(arrival_ns));
    }
    return insert_result_name(result);
  }

  py::tuple pull(long long now_ns) {
    py::array_t<float> out =
        new_audio<float>(static_cast<std::size_t>(jb_->frame_samples()), jb_->channels());
    py::object action = pull_impl(out.mutable_data(), now_ns);
    return py::make_tuple(out, action);
  }

  py::object pull_into(py::array out, long long now_ns) {
    const std::size_t frames = check_audio<float>(out, jb_->channels(), "out");
    if (frames != static_cast<std::size_t>(jb_->frame_samples())) {
      throw py::value_error(
          "out must hold exactly frame_samples=" + std::to_string(jb_->frame_samples()) +
          " frames, got " + std::to_string(frames));
    }
    if (!out.writeable()) throw py::value_error("out must be writeable");
    return pull_impl(static_cast<float*>(out.mutable_data()), now_ns);
  }

  void flush() {
    ExclusiveUse guard(busy_, "JitterBuffer.flush");
    jb_->flush();
  }
  void reset() {
    ExclusiveUse guard(busy_, "JitterBuffer.reset");
    jb_->reset();
  }
  JitterBufferStats stats() {
    ExclusiveUse guard(busy_, "JitterBuffer.stats");
    return jb_->stats();
  }
  double target_delay_ms() {
    ExclusiveUse guard(busy_, "JitterBuffer.target_delay_ms");
    return jb_->target_delay_ms();
  }

  int sample_rate() const { return jb_->sample_rate_hz(); }
  int channels() const { return jb_->channels(); }
  int frame_samples() const { return jb_->frame_samples(); }
  int frame_ms() const { return jb_->config().frame_ms; }
  int min_delay_ms() const { return jb_->config().min_delay_ms; }
  int max_delay_ms() const { return jb_->config().max_delay_ms; }
  int capacity_packets() const { return jb_->config().capacity_packets; }
  int max_payload_bytes() const { return jb_->config().max_payload_bytes; }
  bool fec() const { return jb_->config().fec; }
  const std::string& codec() const { return codec_; }

  std::string repr() const {
    return "JitterBuffer(sample_rate=" + std::to_string(sample_rate()) +
           ", channels=" + std::to_string(channels()) + ", codec='" + codec_ +
           "', min_delay_ms=" + std::to_string(min_delay_ms()) +
           ", max_delay_ms=" + std::to_string(max_delay_ms()) + ")";
  }

 private:
  py::object pull_impl(float* out, long long now_ns) {
    ExclusiveUse guard(busy_, "JitterBuffer.pull");
    PlayoutAction action;
    {
      py::gil_scoped_release nogil;
      action = jb_->pull(static_cast<std::int64_t>(now_ns), out);
    }
    return actions_[static_cast<std::size_t>(action)];
  }

  std::string codec_;
  std::unique_ptr<JitterBuffer> jb_;
  std::array<py::object, kActionCount> actions_;
  std::atomic<bool> busy_{false};
};

py::dict stats_dict(const JitterBufferStats& s) {
  py::dict d;
  d["packets_received"] = s.packets_received;
  d["packets_lost"] = s.packets_lost;
  d["packets_late"] = s.packets_late;
  d["packets_duplicated"] = s.packets_duplicated;
  d["packets_discarded"] = s.packets_discarded;
  d["packets_invalid"] = s.packets_invalid;
  d["packets_oversized"] = s.packets_oversized;
  d["decode_errors"] = s.decode_errors;
  d["stream_resets"] = s.stream_resets;
  d["samples_played"] = s.samples_played;
  d["concealed_samples"] = s.concealed_samples;
  d["concealment_events"] = s.concealment_events;
  d["tail_concealed_samples"] = s.tail_concealed_samples;
  d["fec_recovered_frames"] = s.fec_recovered_frames;
  d["fec_recovered_samples"] = s.fec_recovered_samples;
  d["comfort_noise_samples"] = s.comfort_noise_samples;
  d["silence_samples"] = s.silence_samples;
  d["accelerated_samples"] = s.accelerated_samples;
  d["expanded_samples"] = s.expanded_samples;
  d["current_delay_ms"] = s.current_delay_ms;
  d["target_delay_ms"] = s.target_delay_ms;
  d["jitter_ms"] = s.jitter_ms;
  d["buffered_ms"] = s.buffered_ms;
  d["buffered_packets"] = s.buffered_packets;
  d["loss_rate"] = s.loss_rate;
  d["playout_timestamp"] =
      s.has_playout_timestamp ? py::object(py::int_(s.playout_timestamp)) : py::object(py::none());
  return d;
}

}  // namespace

void init_jitter(py::module_& m) {
  py::class_<JitterBufferStats>(m, "JitterBufferStats",
                                "Counters since construction (samples are per channel) and "
                                "current delay figures of a JitterBuffer.")
      .def(py::init<>())
      .def_readonly("packets_received", &JitterBufferStats::packets_received)
      .def_readonly("packets_lost", &JitterBufferStats::packets_lost)
      .def_readonly("packets_late", &JitterBufferStats::packets_late)
      .def_readonly("packets_duplicated", &JitterBufferStats::packets_duplicated)
      .def_readonly("packets_discarded", &JitterBufferStats::packets_discarded)
      .def_readonly("packets_invalid", &JitterBufferStats::packets_invalid)
      .def_readonly("packets_oversized", &JitterBufferStats::packets_oversized)
      .def_readonly("decode_errors", &JitterBufferStats::decode_errors)
      .def_readonly("stream_resets", &JitterBufferStats::stream_resets)
      .def_readonly("samples_played", &JitterBufferStats::samples_played)
      .def_readonly("concealed_samples", &JitterBufferStats::concealed_samples)
      .def_readonly("concealment_events", &JitterBufferStats::concealment_events)
      .def_readonly("tail_concealed_samples", &JitterBufferStats::tail_concealed_samples)
      .def_readonly("fec_recovered_frames", &JitterBufferStats::fec_recovered_frames)
      .def_readonly("fec_recovered_samples", &JitterBufferStats::fec_recovered_samples)
      .def_readonly("comfort_noise_samples", &JitterBufferStats::comfort_noise_samples)
      .def_readonly("silence_samples", &JitterBufferStats::silence_samples)
      .def_readonly("accelerated_samples", &JitterBufferStats::accelerated_samples)
      .def_readonly("expanded_samples", &JitterBufferStats::expanded_samples)
      .def_readonly("current_delay_ms", &JitterBufferStats::current_delay_ms)
      .def_readonly("target_delay_ms", &JitterBufferStats::target_delay_ms)
      .def_readonly("jitter_ms", &JitterBufferStats::jitter_ms)
      .def_readonly("buffered_ms", &JitterBufferStats::buffered_ms)
      .def_readonly("buffered_packets", &JitterBufferStats::buffered_packets)
      .def_readonly("loss_rate", &JitterBufferStats::loss_rate)
      .def_property_readonly(
          "playout_timestamp",
          [](const JitterBufferStats& s) -> py::object {
            if (!s.has_playout_timestamp) return py::none();
            return py::int_(s.playout_timestamp);
          },
          "RTP timestamp of the media at the start of the last pulled frame, or None before "
          "playout starts. Filler while waiting for a late packet keeps it still.")
      .def("as_dict", &stats_dict, "All fields as a dict.")
      .def("__repr__", [](const JitterBufferStats& s) {
        return "JitterBufferStats(" + py::repr(stats_dict(s)).cast<std::string>() + ")";
      });

  py::class_<PyJitterBuffer>(m, "JitterBuffer", R"doc(
Adaptive jitter buffer and decoder of the receive path (NetEq-class).

``insert(seq, timestamp, payload, arrival_ns)`` stores one RTP payload and returns what became of
it: "buffered", "duplicate", "late", "invalid" or "oversized". ``pull(now_ns)`` returns exactly
``frame_samples`` samples of float32 PCM and what was done to produce them: "normal", "fec",
"conceal", "comfort_noise", "accelerate", "expand" (time stretching by one pitch period towards
the target delay) or "silence". Times are nanoseconds on one monotonic clock, injected by the
caller; nothing inside reads a clock.

Owned by the playout thread: insert, pull, flush, reset and stats must come from one thread (a
Downlink puts a lock-free packet queue in front of insert). codec "opus" (RTP clock 48 kHz) or
"l16" (big-endian PCM16, RTP clock = sample_rate; for tests).
)doc")
      .def(py::init<int, int, const std::string&, int, int, int, int, int, int, bool>(),
           py::arg("sample_rate") = 48000, py::arg("channels") = 1, py::kw_only(),
           py::arg("codec") = "opus", py::arg("frame_ms") = 20, py::arg("min_delay_ms") = 10,
           py::arg("max_delay_ms") = 500, py::arg("start_delay_ms") = 60,
           py::arg("capacity_packets") = 128, py::arg("max_payload_bytes") = 1500,
           py::arg("fec") = true)
      .def("insert", &PyJitterBuffer::insert, py::arg("seq"), py::arg("timestamp"),
           py::arg("payload"), py::arg("arrival_ns"))
      .def("pull", &PyJitterBuffer::pull, py::arg("now_ns"),
           "Returns (pcm, action): one frame of float32 PCM and what was done.")
      .def("pull_into", &PyJitterBuffer::pull_into, py::arg("out"), py::arg("now_ns"),
           "Writes one frame into out (float32, frame_samples frames) and returns the action.")
      .def("flush", &PyJitterBuffer::flush,
           "Drops all buffered and unplayed audio (barge-in); packets sent before stay late.")
      .def("reset", &PyJitterBuffer::reset, "Starts over for a new stream (e.g. SSRC change).")
      .def_property_readonly("stats", &PyJitterBuffer::stats)
      .def_property_readonly("target_delay_ms", &PyJitterBuffer::target_delay_ms)
      .def_property_readonly("sample_rate", &PyJitterBuffer::sample_rate)
      .def_property_readonly("channels", &PyJitterBuffer::channels)
      .def_property_readonly("frame_samples", &PyJitterBuffer::frame_samples)
      .def_property_readonly("frame_ms", &PyJitterBuffer::frame_ms)
      .def_property_readonly("min_delay_ms", &PyJitterBuffer::min_delay_ms)
      .def_property_readonly("max_delay_ms", &PyJitterBuffer::max_delay_ms)
      .def_property_readonly("capacity_packets", &PyJitterBuffer::capacity_packets)
      .def_property_readonly("max_payload_bytes", &PyJitterBuffer::max_payload_bytes)
      .def_property_readonly("fec", &PyJitterBuffer::fec)
      .def_property_readonly("codec", &PyJitterBuffer::codec)
      .def("__repr__", &PyJitterBuffer::repr);
}

}  // namespace rtvoice::bind
