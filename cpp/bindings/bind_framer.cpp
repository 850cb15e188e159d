#include <memory>
#include <tuple>

#include "common.hpp"
#include "rtvoice/framer.hpp"

namespace rtvoice::bind {
namespace {

class PyFramer {
 public:
  // Calls f with whichever typed object this instance holds.
  template <typename F>
  auto visit(F&& f) {
    return type_ == SampleType::Float32 ? f(*f32_) : f(*i16_);
  }

  PyFramer(int sample_rate, int frame_ms, int channels, const py::object& dtype)
      : type_(parse_sample_type(dtype)) {
    if (type_ == SampleType::Float32) {
      f32_ = std::make_unique<Framer<float>>(sample_rate, frame_ms, channels);
    } else {
      i16_ = std::make_unique<Framer<std::int16_t>>(sample_rate, frame_ms, channels);
    }
  }

  py::tuple push(const py::array& chunk) {
    ExclusiveUse guard(busy_, "Framer.push");
    if (type_ == SampleType::Float32) return push_impl(*f32_, chunk);
    return push_impl(*i16_, chunk);
  }

  py::tuple flush() {
    ExclusiveUse guard(busy_, "Framer.flush");
    if (type_ == SampleType::Float32) return flush_impl(*f32_);
    return flush_impl(*i16_);
  }

  void reset(std::uint64_t start_index) {
    ExclusiveUse guard(busy_, "Framer.reset");
    visit([&](auto& f) { f.reset(start_index); });
  }

  int sample_rate() {
    return visit([](auto& f) { return f.sample_rate_hz(); });
  }
  int frame_ms() {
    return visit([](auto& f) { return f.frame_ms(); });
  }
  int channels() {
    return visit([](auto& f) { return f.channels(); });
  }
  std::size_t frame_samples() {
    return visit([](auto& f) { return f.frame_frames(); });
  }
  std::size_t pending() {
    return visit([](auto& f) { return f.pending_frames(); });
  }
  std::uint64_t next_index() {
    return visit([](auto& f) { return f.next_frame_index(); });
  }
  py::dtype dtype() const {
    return type_ == SampleType::Float32 ? py::dtype::of<float>() : py::dtype::of<std::int16_t>();
  }

  std::string repr() {
    return "Framer(sample_rate=" + std::to_string(sample_rate()) +
           ", frame_ms=" + std::to_string(frame_ms()) + ", channels=" + std::to_string(channels()) +
           ", dtype=" + sample_type_name(type_) + ", pending=" + std::to_string(pending()) + ")";
  }

 private:
  template <typename T>
  py::array_t<T> new_frames(const Framer<T>& f, std::size_t count) {
    const auto n = static_cast<py::ssize_t>(count);
    const auto len = static_cast<py::ssize_t>(f.frame_frames());
    if (f.channels() == 1) return py::array_t<T>({n, len});
    return py::array_t<T>({n, len, static_cast<py::ssize_t>(f.channels())});
  }

  template <typename T>
  py::tuple push_impl(Framer<T>& f, const py::array& chunk) {
    const std::size_t frames = check_audio<T>(chunk, f.channels(), "chunk");
    const std::size_t count = (f.pending_frames() + frames) / f.frame_frames();
    py::array_t<T> out = new_frames(f, count);
    py::array_t<std::uint64_t> starts({static_cast<py::ssize_t>(count)});
    T* dst = out.mutable_data();
    std::uint64_t* idx = starts.mutable_data();
    const T* src = static_cast<const T*>(chunk.data());
    const std::size_t frame_values = f.frame_frames() * static_cast<std::size_t>(f.channels());
    {
      py::gil_scoped_release nogil;
      std::size_t i = 0;
      f.push(src, frames, [&](const T* frame, std::uint64_t start) {
        std::memcpy(dst + i * frame_values, frame, frame_values * sizeof(T));
        idx[i++] = start;
      });
    }
    return py::make_tuple(out, starts);
  }

  template <typename T>
  py::tuple flush_impl(Framer<T>& f) {
    const std::size_t count = f.pending_frames() != 0 ? 1 : 0;
    py::array_t<T> out = new_frames(f, count);
    py::array_t<std::uint64_t> starts({static_cast<py::ssize_t>(count)});
    T* dst = out.mutable_data();
    std::uint64_t* idx = starts.mutable_data();
    const std::size_t frame_values = f.frame_frames() * static_cast<std::size_t>(f.channels());
    f.flush([&](const T* frame, std::uint64_t start) {
      std::memcpy(dst, frame, frame_values * sizeof(T));
      idx[0] = start;
    });
    return py::make_tuple(out, starts);
  }

  SampleType type_;
  std::unique_ptr<Framer<float>> f32_;
  std::unique_ptr<Framer<std::int16_t>> i16_;
  std::atomic<bool> busy_{false};
};

}  // namespace

void init_framer(py::module_& m) {
  py::class_<PyFramer>(m, "Framer", R"doc(
Cuts arbitrary chunks into exact frames of ``frame_ms`` milliseconds.

``push(chunk)`` returns ``(frames, starts)``: the completed frames as one array of shape
``(count, frame_samples)`` (or ``(count, frame_samples, channels)``) and, for each, the stream
index of its first sample, which is the source of RTP timestamps. Samples that do not complete a
frame wait for the next chunk. Owned by one thread.
)doc")
      .def(py::init<int, int, int, const py::object&>(), py::arg("sample_rate"),
           py::arg("frame_ms") = 20, py::arg("channels") = 1,
           py::arg("dtype") = py::dtype::of<float>())
      .def("push", &PyFramer::push, py::arg("chunk"))
      .def("flush", &PyFramer::flush,
           "Returns the pending partial frame padded with zeros (zero or one frame).")
      .def("reset", &PyFramer::reset, py::arg("start_index") = 0,
           "Drops pending samples; the next frame starts at start_index.")
      .def_property_readonly("sample_rate", &PyFramer::sample_rate)
      .def_property_readonly("frame_ms", &PyFramer::frame_ms)
      .def_property_readonly("channels", &PyFramer::channels)
      .def_property_readonly("dtype", &PyFramer::dtype)
      .def_property_readonly("frame_samples", &PyFramer::frame_samples, "Frames per output frame.")
      .def_property_readonly("pending", &PyFramer::pending, "Frames waiting for a full frame.")
      .def_property_readonly("next_index", &PyFramer::next_index,
                             "Stream index of the first sample of the next frame.")
      .def("__repr__", &PyFramer::repr);
}

}  // namespace rtvoice::bind
