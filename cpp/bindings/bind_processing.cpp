#include <pybind11/stl.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "processing_common.hpp"
#include "rtvoice/audio_processing.hpp"

namespace rtvoice::bind {
namespace {

class PyAudioProcessor {
 public:
  explicit PyAudioProcessor(const ProcessingConfig& config) : proc_(config) {}

  // Whole 10 ms frames of mono float32 capture audio, each with the far-end frame played at the
  // same time (render: same length, or None for no far end).
  py::array_t<float> process(const py::array& capture, const std::optional<py::array>& render) {
    ExclusiveUse guard(busy_, "AudioProcessor.process");
    const std::size_t frames = check_audio<float>(capture, 1, "capture");
    const std::size_t frame = proc_.frame_samples();
    if (frames % frame != 0) {
      throw py::value_error("capture must be whole 10 ms frames (" + std::to_string(frame) +
                            " samples each), got " + std::to_string(frames));
    }
    const float* ref = nullptr;
    if (render) {
      if (check_audio<float>(*render, 1, "render") != frames) {
        throw py::value_error("render must have as many samples as capture");
      }
      ref = static_cast<const float*>(render->data());
    }
    py::array_t<float> out = new_audio<float>(frames, 1);
    float* dst = out.mutable_data();
    const float* src = static_cast<const float*>(capture.data());
    {
      py::gil_scoped_release nogil;
      std::memcpy(dst, src, frames * sizeof(float));
      for (std::size_t k = 0; k < frames; k += frame) {
        proc_.process(ref != nullptr ? ref + k : nullptr, dst + k);
      }
    }
    return out;
  }

  void set_enabled(bool aec, bool ns, bool agc, bool hpf) { proc_.set_enabled(aec, ns, agc, hpf); }
  void set_stream_delay_ms(int ms) {
    if (ms < 0 || ms > 1000) throw py::value_error("stream_delay_ms must be 0..1000");
    proc_.set_stream_delay_ms(ms);
  }
  py::dict stats() const { return processing_stats_dict(proc_.stats(), proc_.config().backend); }
  const AudioProcessor& native() const { return proc_; }

 private:
  AudioProcessor proc_;
  std::atomic<bool> busy_{false};
};

}  // namespace

void init_processing(py::module_& m) {
  m.def(
      "voice_processing_backends",
      [] {
        std::vector<std::string> names;
        for (ProcessingBackend b : available_backends()) names.emplace_back(backend_name(b));
        return names;
      },
      "The echo cancellation backends this build links, the preferred one first.");
  m.def(
      "voice_processing_libraries",
      [] {
        py::dict out;
        for (ProcessingBackend b : available_backends()) out[backend_name(b)] = backend_library(b);
        return out;
      },
      "Each backend's library and version, e.g. {'webrtc': 'webrtc-audio-processing 1.3 (AEC3)'}.");
  m.def(
      "aec3_tuning",
      [] {
        py::dict out;
        for (const auto& [key, value] : aec3_tuning()) out[py::str(key)] = value;
        return out;
      },
      "How the core configures AEC3 ({'delay_headroom_ms': 20, 'filter_ms': 72, ...}); empty "
      "without AEC3 or where the library sets it up.");

  py::class_<PyAudioProcessor>(m, "AudioProcessor", R"doc(
Capture-side voice processing in 10 ms frames of mono float32 audio: acoustic echo cancellation
against the far-end frames, noise suppression, automatic gain control and a high-pass filter
(WebRTC's audio processing module or SpeexDSP). What ``Uplink.set_processing`` runs on the
capture thread; standalone for offline use and benchmarks. ``process`` belongs to one thread;
``set_enabled``, ``set_stream_delay_ms`` and ``stats`` to any thread.
)doc")
      .def(py::init([](int sample_rate, const std::optional<std::string>& backend, bool aec,
                       bool noise_suppression, bool agc, bool high_pass, int speex_filter_ms,
                       int stream_delay_ms, int aec_suppression) {
             ProcessingConfig c;
             c.sample_rate_hz = sample_rate;
             c.backend = backend_or_default(backend);
             c.aec = aec;
             c.noise_suppression = noise_suppression;
             c.agc = agc;
             c.high_pass = high_pass;
             c.speex_filter_ms = speex_filter_ms;
             c.stream_delay_ms = stream_delay_ms;
             c.aec_suppression = aec_suppression;
             return std::make_unique<PyAudioProcessor>(c);
           }),
           py::arg("sample_rate") = 48000, py::kw_only(), py::arg("backend") = py::none(),
           py::arg("aec") = true, py::arg("noise_suppression") = true, py::arg("agc") = true,
           py::arg("high_pass") = true, py::arg("speex_filter_ms") = 200,
           py::arg("stream_delay_ms") = 0,
           py::arg("aec_suppression") = ProcessingConfig{}.aec_suppression)
      .def("process", &PyAudioProcessor::process, py::arg("capture"),
           py::arg("render") = py::none(),
           "Processes whole 10 ms frames of capture audio against the far-end (render) frames "
           "played at the same time; returns the processed audio.")
      .def("set_enabled", &PyAudioProcessor::set_enabled, py::arg("aec"),
           py::arg("noise_suppression"), py::arg("agc"), py::arg("high_pass"))
      .def("set_stream_delay_ms", &PyAudioProcessor::set_stream_delay_ms, py::arg("delay_ms"))
      .def_property_readonly("stats", &PyAudioProcessor::stats)
      .def_property_readonly("backend",
                             [](const PyAudioProcessor& p) {
                               return std::string(backend_name(p.native().config().backend));
                             })
      .def_property_readonly(
          "sample_rate",
          [](const PyAudioProcessor& p) { return p.native().config().sample_rate_hz; })
      .def_property_readonly("frame_samples",
                             [](const PyAudioProcessor& p) { return p.native().frame_samples(); });
}

}  // namespace rtvoice::bind
