#include <opus.h>
#include <pybind11/gil_safe_call_once.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "common.hpp"
#include "rtvoice/opus_codec.hpp"

namespace rtvoice::bind {
namespace {

PYBIND11_CONSTINIT py::gil_safe_call_once_and_store<py::object> opus_error_type;

OpusApplication parse_application(const std::string& name) {
  if (name == "voip") return OpusApplication::Voip;
  if (name == "audio") return OpusApplication::Audio;
  if (name == "restricted_lowdelay") return OpusApplication::RestrictedLowDelay;
  throw py::value_error("application must be 'voip', 'audio' or 'restricted_lowdelay', got '" +
                        name + "'");
}

const char* application_name(OpusApplication app) {
  switch (app) {
    case OpusApplication::Voip:
      return "voip";
    case OpusApplication::Audio:
      return "audio";
    case OpusApplication::RestrictedLowDelay:
      return "restricted_lowdelay";
  }
  return "?";
}

std::string valid_frames_text(int rate_hz) {
  const int s = rate_hz / 100;
  return "exactly 10, 20, 40 or 60 ms: " + std::to_string(s) + ", " + std::to_string(2 * s) + ", " +
         std::to_string(4 * s) + " or " + std::to_string(6 * s) + " samples per channel at " +
         std::to_string(rate_hz) + " Hz";
}

// A bytes-like packet argument: bytes (read directly), or any C-contiguous buffer of single
// bytes (bytearray, memoryview, numpy uint8), which stays exported, so it cannot be resized,
// for as long as this object lives; that covers the GIL-released codec call.
class Packet {
 public:
  Packet(const py::handle& obj, const char* what) {
    if (PyBytes_Check(obj.ptr())) {
      data_ = reinterpret_cast<const std::uint8_t*>(PyBytes_AS_STRING(obj.ptr()));
      bytes_ = static_cast<std::size_t>(PyBytes_GET_SIZE(obj.ptr()));
    } else {
      if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_RECORDS_RO) != 0) {
        PyErr_Clear();
        throw py::type_error(std::string(what) +
                             " must be bytes, bytearray or a memoryview of bytes, got " +
                             py::str(py::type::handle_of(obj)).cast<std::string>());
      }
      const bool bytes_like = view_.itemsize == 1 && view_.ndim <= 1;
      const bool contiguous = PyBuffer_IsContiguous(&view_, 'C') != 0;
      if (!bytes_like || !contiguous) {
        PyBuffer_Release(&view_);
        if (!bytes_like) {
          throw py::type_error(std::string(what) +
                               " must be a 1-D buffer of bytes (bytes, bytearray, memoryview)");
        }
        throw py::value_error(std::string(what) + " must be a contiguous buffer");
      }
      held_ = true;
      data_ = static_cast<const std::uint8_t*>(view_.buf);
      bytes_ = static_cast<std::size_t>(view_.len);
    }
    if (bytes_ == 0 || bytes_ > static_cast<std::size_t>(kOpusMaxPacketBytes)) {
      release();
      if (bytes_ == 0) {
        throw py::value_error(std::string(what) +
                              " is empty; for a lost packet use conceal() or decode_fec()");
      }
      throw py::value_error(std::string(what) + " has " + std::to_string(bytes_) +
                            " bytes; an Opus packet has at most " +
                            std::to_string(kOpusMaxPacketBytes));
    }
  }
  ~Packet() { release(); }
  Packet(const Packet&) = delete;
  Packet& operator=(const Packet&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return bytes_; }

 private:
  void release() {
    if (held_) PyBuffer_Release(&view_);
    held_ = false;
  }

  Py_buffer view_{};
  bool held_ = false;
  const std::uint8_t* data_ = nullptr;
  std::size_t bytes_ = 0;
};

class PyOpusEncoder {
 public:
  PyOpusEncoder(int sample_rate, int channels, const std::string& application, int bitrate,
                int complexity, bool fec, int packet_loss_perc, bool dtx)
      : enc_(make_config(sample_rate, channels, application, bitrate, complexity, fec,
                         packet_loss_perc, dtx)),
        out_(std::make_unique<std::uint8_t[]>(static_cast<std::size_t>(kOpusMaxPacketBytes))) {}

  py::bytes encode(const py::array& frame) {
    ExclusiveUse guard(busy_, "OpusEncoder.encode");
    const SampleType type = array_sample_type(frame, "frame");
    const std::size_t frames = audio_frames(frame, enc_.channels(), "frame");
    const int rate = enc_.sample_rate_hz();
    if (frames > static_cast<std::size_t>(rate) ||
        !rtvoice::OpusEncoder::frame_samples_valid(rate, static_cast<int>(frames))) {
      throw py::value_error("frame must be " + valid_frames_text(rate) + ", got " +
                            std::to_string(frames));
    }
    const int n = static_cast<int>(frames);
    const void* src = frame.data();
    std::uint8_t* dst = out_.get();
    int written = 0;
    {
      py::gil_scoped_release nogil;
      // Non-finite float samples are coded as 0 and counted by the core (sanitize.hpp).
      if (type == SampleType::Float32) {
        written = enc_.encode(static_cast<const float*>(src), n, dst, kOpusMaxPacketBytes);
      } else {
        written = enc_.encode(static_cast<const std::int16_t*>(src), n, dst, kOpusMaxPacketBytes);
      }
    }
    if (written < 0) throw OpusError(written, "opus_encode");
    return py::bytes(reinterpret_cast<const char*>(dst), static_cast<std::size_t>(written));
  }

  void set_bitrate(int bps) {
    ExclusiveUse guard(busy_, "OpusEncoder.set_bitrate");
    enc_.set_bitrate(bps);
  }
  void set_fec(bool on) {
    ExclusiveUse guard(busy_, "OpusEncoder.set_fec");
    enc_.set_fec(on);
  }
  void set_packet_loss_perc(int p) {
    ExclusiveUse guard(busy_, "OpusEncoder.set_packet_loss_perc");
    enc_.set_packet_loss_perc(p);
  }
  void set_dtx(bool on) {
    ExclusiveUse guard(busy_, "OpusEncoder.set_dtx");
    enc_.set_dtx(on);
  }
  void set_complexity(int c) {
    ExclusiveUse guard(busy_, "OpusEncoder.set_complexity");
    enc_.set_complexity(c);
  }
  void reset() {
    ExclusiveUse guard(busy_, "OpusEncoder.reset");
    enc_.reset();
  }

  const OpusEncoderConfig& config() const { return enc_.config(); }
  int lookahead() const { return enc_.lookahead_samples(); }
  std::uint32_t final_range() const { return enc_.final_range(); }
  bool in_dtx() const { return enc_.in_dtx(); }
  std::uint64_t nonfinite_samples() const { return enc_.nonfinite_samples(); }

  std::string repr() const {
    const OpusEncoderConfig& c = enc_.config();
    return "OpusEncoder(sample_rate=" + std::to_string(c.sample_rate_hz) +
           ", channels=" + std::to_string(c.channels) + ", application='" +
           application_name(c.application) + "', bitrate=" + std::to_string(c.bitrate_bps) +
           ", complexity=" + std::to_string(c.complexity) + ", fec=" + (c.fec ? "True" : "False") +
           ", packet_loss_perc=" + std::to_string(c.packet_loss_perc) +
           ", dtx=" + (c.dtx ? "True" : "False") + ")";
  }

 private:
  static OpusEncoderConfig make_config(int sample_rate, int channels,
                                       const std::string& application, int bitrate, int complexity,
                                       bool fec, int packet_loss_perc, bool dtx) {
    OpusEncoderConfig c;
    c.sample_rate_hz = sample_rate;
    c.channels = channels;
    c.application = parse_application(application);
    c.bitrate_bps = bitrate;
    c.complexity = complexity;
    c.fec = fec;
    c.packet_loss_perc = packet_loss_perc;
    c.dtx = dtx;
    return c;
  }

  rtvoice::OpusEncoder enc_;
  std::unique_ptr<std::uint8_t[]> out_;
  std::atomic<bool> busy_{false};
};

class PyOpusDecoder {
 public:
  PyOpusDecoder(int sample_rate, int channels) : dec_(sample_rate, channels) {}

  py::array decode(const py::object& packet_buf, const py::object& dtype) {
    ExclusiveUse guard(busy_, "OpusDecoder.decode");
    const SampleType type = sample_type(dtype);
    const Packet packet(packet_buf, "packet");
    const int samples =
        rtvoice::OpusDecoder::packet_samples(packet.data(), packet.size(), dec_.sample_rate_hz());
    if (samples < 0) throw OpusError(samples, "opus_packet_get_nb_samples");
    if (type == SampleType::Float32)
      return run<float>(
          samples,
          [&](float* out) { return dec_.decode(packet.data(), packet.size(), out, samples); },
          "opus_decode_float");
    return run<std::int16_t>(
        samples,
        [&](std::int16_t* out) { return dec_.decode(packet.data(), packet.size(), out, samples); },
        "opus_decode");
  }

  py::array decode_fec(const py::object& packet_buf, int frame_samples, const py::object& dtype) {
    ExclusiveUse guard(busy_, "OpusDecoder.decode_fec");
    const SampleType type = sample_type(dtype);
    const Packet packet(packet_buf, "next_packet");
    check_gap(frame_samples);
    if (type == SampleType::Float32)
      return run<float>(
          frame_samples,
          [&](float* out) {
            return dec_.decode_fec(packet.data(), packet.size(), out, frame_samples);
          },
          "opus_decode_float(decode_fec=1)");
    return run<std::int16_t>(
        frame_samples,
        [&](std::int16_t* out) {
          return dec_.decode_fec(packet.data(), packet.size(), out, frame_samples);
        },
        "opus_decode(decode_fec=1)");
  }

  py::array conceal(int frame_samples, const py::object& dtype) {
    ExclusiveUse guard(busy_, "OpusDecoder.conceal");
    const SampleType type = sample_type(dtype);
    check_gap(frame_samples);
    if (type == SampleType::Float32)
      return run<float>(
          frame_samples, [&](float* out) { return dec_.conceal(out, frame_samples); },
          "opus_decode_float(PLC)");
    return run<std::int16_t>(
        frame_samples, [&](std::int16_t* out) { return dec_.conceal(out, frame_samples); },
        "opus_decode(PLC)");
  }

  void reset() {
    ExclusiveUse guard(busy_, "OpusDecoder.reset");
    dec_.reset();
  }

  int sample_rate() const { return dec_.sample_rate_hz(); }
  int channels() const { return dec_.channels(); }
  int last_packet_duration() const { return dec_.last_packet_duration_samples(); }
  std::uint32_t final_range() const { return dec_.final_range(); }

  std::string repr() const {
    return "OpusDecoder(sample_rate=" + std::to_string(dec_.sample_rate_hz()) +
           ", channels=" + std::to_string(dec_.channels()) + ")";
  }

 private:
  // parse_sample_type() with a one-entry cache: callers pass the same dtype object every time.
  SampleType sample_type(const py::object& dtype) {
    if (dtype.is(last_dtype_)) return last_type_;
    const SampleType t = parse_sample_type(dtype);
    last_dtype_ = dtype;
    last_type_ = t;
    return t;
  }

  void check_gap(int frame_samples) const {
    const int rate = dec_.sample_rate_hz();
    if (!rtvoice::OpusDecoder::gap_samples_valid(rate, frame_samples)) {
      throw py::value_error("frame_samples must be a positive multiple of 2.5 ms (" +
                            std::to_string(rate / 400) + " samples at " + std::to_string(rate) +
                            " Hz) up to 120 ms (" + std::to_string(rate / 1000 * 120) + "), got " +
                            std::to_string(frame_samples));
    }
  }

  // Allocates the output, runs the codec call without the GIL, checks its result.
  template <typename T, typename F>
  py::array run(int samples, F&& call, const char* what) {
    py::array_t<T> out = new_audio<T>(static_cast<std::size_t>(samples), dec_.channels());
    T* dst = out.mutable_data();
    int n = 0;
    {
      py::gil_scoped_release nogil;
      n = call(dst);
    }
    if (n < 0) throw OpusError(n, what);
    if (n != samples) {
      throw OpusError(OPUS_INTERNAL_ERROR, std::string(what) + " returned " + std::to_string(n) +
                                               " samples, expected " + std::to_string(samples));
    }
    return std::move(out);
  }

  rtvoice::OpusDecoder dec_;
  py::object last_dtype_;
  SampleType last_type_ = SampleType::Float32;
  std::atomic<bool> busy_{false};
};

int packet_samples(const py::object& buf, int sample_rate) {
  if (!opus_rate_supported(sample_rate)) {
    throw py::value_error("sample_rate must be 8000, 12000, 16000, 24000 or 48000 Hz, got " +
                          std::to_string(sample_rate));
  }
  const Packet packet(buf, "packet");
  const int n = rtvoice::OpusDecoder::packet_samples(packet.data(), packet.size(), sample_rate);
  if (n < 0) throw OpusError(n, "opus_packet_get_nb_samples");
  return n;
}

bool packet_has_fec(const py::object& buf) {
  const Packet packet(buf, "packet");
  return rtvoice::OpusDecoder::packet_has_fec(packet.data(), packet.size());
}

}  // namespace

void init_opus(py::module_& m) {
  opus_error_type.call_once_and_store_result([&]() -> py::object {
    py::exception<OpusError> cls(m, "OpusError", PyExc_RuntimeError);
    cls.attr("__doc__") =
        "A libopus call failed. ``code`` is the libopus error code (e.g. -4 for "
        "OPUS_INVALID_PACKET); the message contains opus_strerror()'s text.";
    cls.attr("code") = py::none();
    return std::move(cls);
  });
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const OpusError& e) {
      py::object cls = opus_error_type.get_stored();
      py::object inst = cls(e.what());
      inst.attr("code") = e.code();
      PyErr_SetObject(cls.ptr(), inst.ptr());
    }
  });

  m.def(
      "libopus_version", []() { return libopus_version().text; },
      "The libopus version string linked at run time, e.g. 'libopus 1.3.1'.");

  py::class_<PyOpusEncoder>(m, "OpusEncoder", R"doc(
Opus encoder with in-band FEC. Owned by one thread; codec state is allocated once here.

``encode(frame)`` takes exactly one 10, 20, 40 or 60 ms frame, float32 or int16, shape
``(samples,)`` for mono or ``(samples, channels)``, and returns one packet. In-band FEC is
only produced when ``fec`` is on, ``packet_loss_perc`` > 0 and the bitrate is high enough
for the coded bandwidth (never in CELT-only mode or ``restricted_lowdelay``).
)doc")
      .def(py::init<int, int, const std::string&, int, int, bool, int, bool>(),
           py::arg("sample_rate") = 48000, py::arg("channels") = 1, py::arg("application") = "voip",
           py::arg("bitrate") = 32000, py::arg("complexity") = 9, py::arg("fec") = true,
           py::arg("packet_loss_perc") = 10, py::arg("dtx") = false)
      .def("encode", &PyOpusEncoder::encode, py::arg("frame"))
      .def("set_bitrate", &PyOpusEncoder::set_bitrate, py::arg("bitrate"))
      .def("set_fec", &PyOpusEncoder::set_fec, py::arg("enabled"))
      .def("set_packet_loss_perc", &PyOpusEncoder::set_packet_loss_perc, py::arg("percent"))
      .def("set_dtx", &PyOpusEncoder::set_dtx, py::arg("enabled"))
      .def("set_complexity", &PyOpusEncoder::set_complexity, py::arg("complexity"))
      .def("reset", &PyOpusEncoder::reset, "Starts a new stream; settings are kept.")
      .def_property(
          "bitrate", [](const PyOpusEncoder& e) { return e.config().bitrate_bps; },
          &PyOpusEncoder::set_bitrate, "Target bitrate in bits/s (6000..510000).")
      .def_property(
          "fec", [](const PyOpusEncoder& e) { return e.config().fec; }, &PyOpusEncoder::set_fec,
          "In-band FEC (LBRR) enabled.")
      .def_property(
          "packet_loss_perc", [](const PyOpusEncoder& e) { return e.config().packet_loss_perc; },
          &PyOpusEncoder::set_packet_loss_perc, "Expected packet loss in percent (0..100).")
      .def_property(
          "dtx", [](const PyOpusEncoder& e) { return e.config().dtx; }, &PyOpusEncoder::set_dtx,
          "Discontinuous transmission enabled.")
      .def_property(
          "complexity", [](const PyOpusEncoder& e) { return e.config().complexity; },
          &PyOpusEncoder::set_complexity, "Encoder complexity (0..10).")
      .def_property_readonly("sample_rate",
                             [](const PyOpusEncoder& e) { return e.config().sample_rate_hz; })
      .def_property_readonly("channels", [](const PyOpusEncoder& e) { return e.config().channels; })
      .def_property_readonly(
          "application",
          [](const PyOpusEncoder& e) { return application_name(e.config().application); })
      .def_property_readonly("lookahead", &PyOpusEncoder::lookahead,
                             "Samples per channel by which decoded audio lags the input.")
      .def_property_readonly("final_range", &PyOpusEncoder::final_range,
                             "Range coder state after the last encode.")
      .def_property_readonly("in_dtx", &PyOpusEncoder::in_dtx,
                             "Whether the last frame was coded as DTX silence.")
      .def_property_readonly("nonfinite_samples", &PyOpusEncoder::nonfinite_samples,
                             "Float samples coded as 0 because they were NaN or infinite.")
      .def_readonly_static("max_packet_bytes", &kOpusMaxPacketBytes)
      .def("__repr__", &PyOpusEncoder::repr);

  py::class_<PyOpusDecoder>(m, "OpusDecoder", R"doc(
Opus decoder with FEC recovery and concealment. Owned by one thread; state allocated once here.

``decode(packet)`` returns the packet's audio, shape ``(samples,)`` for mono or
``(samples, channels)``. For a lost packet either ``decode_fec(next_packet, frame_samples)``
(recovers the frame before ``next_packet`` from its in-band FEC data; decode ``next_packet``
normally afterwards) or ``conceal(frame_samples)``.
)doc")
      .def(py::init<int, int>(), py::arg("sample_rate") = 48000, py::arg("channels") = 1)
      .def("decode", &PyOpusDecoder::decode, py::arg("packet"),
           py::arg("dtype") = py::dtype::of<float>())
      .def("decode_fec", &PyOpusDecoder::decode_fec, py::arg("next_packet"),
           py::arg("frame_samples"), py::arg("dtype") = py::dtype::of<float>())
      .def("conceal", &PyOpusDecoder::conceal, py::arg("frame_samples"),
           py::arg("dtype") = py::dtype::of<float>())
      .def("reset", &PyOpusDecoder::reset, "Starts a new stream.")
      .def_property_readonly("sample_rate", &PyOpusDecoder::sample_rate)
      .def_property_readonly("channels", &PyOpusDecoder::channels)
      .def_property_readonly("last_packet_duration", &PyOpusDecoder::last_packet_duration,
                             "Samples per channel produced by the last call.")
      .def_property_readonly("final_range", &PyOpusDecoder::final_range,
                             "Range coder state after the last decode.")
      .def_static("packet_samples", &packet_samples, py::arg("packet"),
                  py::arg("sample_rate") = 48000,
                  "Samples per channel in the packet at sample_rate (reads the header only).")
      .def_static("packet_has_fec", &packet_has_fec, py::arg("packet"),
                  "Whether the packet carries in-band FEC (LBRR) data for the frame before it.")
      .def("__repr__", &PyOpusDecoder::repr);
}

}  // namespace rtvoice::bind
