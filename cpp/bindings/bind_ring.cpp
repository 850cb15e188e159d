#include <atomic>
#include <memory>

#include "common.hpp"
#include "rtvoice/spsc_ring.hpp"

namespace rtvoice::bind {
namespace {

// One Python class over the two sample types; exactly one of the rings is set.
class AudioRing {
 public:
  // Calls f with whichever typed object this instance holds.
  template <typename F>
  auto visit(F&& f) {
    return type_ == SampleType::Float32 ? f(*f32_) : f(*i16_);
  }

  AudioRing(std::size_t capacity, int channels, const py::object& dtype)
      : type_(parse_sample_type(dtype)), channels_(channels) {
    if (channels < 1 || channels > 64) {
      throw py::value_error("channels must be between 1 and 64, got " + std::to_string(channels));
    }
    if (type_ == SampleType::Float32) {
      f32_ = std::make_unique<SpscRing<float>>(capacity, static_cast<std::size_t>(channels));
    } else {
      i16_ = std::make_unique<SpscRing<std::int16_t>>(capacity, static_cast<std::size_t>(channels));
    }
  }

  std::size_t write(const py::array& data) {
    ExclusiveUse guard(producer_busy_, "AudioRing.write");
    if (type_ == SampleType::Float32) return write_impl(*f32_, data);
    return write_impl(*i16_, data);
  }

  py::array read(std::size_t frames) {
    ExclusiveUse guard(consumer_busy_, "AudioRing.read");
    if (type_ == SampleType::Float32) return read_impl(*f32_, frames);
    return read_impl(*i16_, frames);
  }

  std::size_t read_into(const py::array& out) {
    ExclusiveUse guard(consumer_busy_, "AudioRing.read_into");
    if (type_ == SampleType::Float32) return read_into_impl(*f32_, out);
    return read_into_impl(*i16_, out);
  }

  std::size_t discard(std::size_t frames) {
    ExclusiveUse guard(consumer_busy_, "AudioRing.discard");
    return visit([&](auto& r) { return r.discard(frames); });
  }

  std::size_t available() {
    return visit([](auto& r) { return r.available_frames(); });
  }
  std::size_t free() {
    return visit([](auto& r) { return r.free_frames(); });
  }
  std::size_t capacity() {
    return visit([](auto& r) { return r.capacity(); });
  }
  int channels() const { return channels_; }
  py::dtype dtype() const {
    return type_ == SampleType::Float32 ? py::dtype::of<float>() : py::dtype::of<std::int16_t>();
  }
  std::uint64_t overrun_frames() {
    return visit([](auto& r) { return r.overrun_frames(); });
  }
  std::uint64_t overruns() {
    return visit([](auto& r) { return r.overrun_events(); });
  }
  std::uint64_t underrun_frames() {
    return visit([](auto& r) { return r.underrun_frames(); });
  }
  std::uint64_t underruns() {
    return visit([](auto& r) { return r.underrun_events(); });
  }
  std::uint64_t frames_written() {
    return visit([](auto& r) { return r.frames_written(); });
  }
  std::uint64_t frames_read() {
    return visit([](auto& r) { return r.frames_read(); });
  }

  std::string repr() {
    return "AudioRing(capacity=" + std::to_string(capacity()) +
           ", channels=" + std::to_string(channels_) + ", dtype=" + sample_type_name(type_) +
           ", available=" + std::to_string(available()) + ")";
  }

 private:
  template <typename T>
  std::size_t write_impl(SpscRing<T>& ring, const py::array& data) {
    const std::size_t frames = check_audio<T>(data, channels_, "data");
    const T* src = static_cast<const T*>(data.data());
    py::gil_scoped_release nogil;
    return ring.write(src, frames);
  }

  template <typename T>
  py::array read_impl(SpscRing<T>& ring, std::size_t frames) {
    const std::size_t n = std::min(frames, ring.available_frames());
    py::array_t<T> out = new_audio<T>(n, channels_);
    T* dst = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      // Only this thread consumes, so the n frames seen above are still there.
      ring.read(dst, n);
      if (n < frames) ring.record_underrun(frames - n);
    }
    return out;
  }

  template <typename T>
  std::size_t read_into_impl(SpscRing<T>& ring, const py::array& out) {
    if (!out.writeable()) throw py::value_error("out must be writeable");
    const std::size_t frames = check_audio<T>(out, channels_, "out");
    T* dst = static_cast<T*>(const_cast<void*>(out.data()));
    py::gil_scoped_release nogil;
    return ring.read(dst, frames);
  }

  SampleType type_;
  int channels_;
  std::unique_ptr<SpscRing<float>> f32_;
  std::unique_ptr<SpscRing<std::int16_t>> i16_;
  std::atomic<bool> producer_busy_{false};
  std::atomic<bool> consumer_busy_{false};
};

}  // namespace

void init_ring(py::module_& m) {
  py::class_<AudioRing>(m, "AudioRing", R"doc(
Lock-free single-producer single-consumer ring of audio frames.

One thread may write (``write``, ``free``), one other thread may read (``read``, ``read_into``,
``discard``, ``available``); counters may be read from anywhere. Calls never block and never
allocate inside the ring. Writing more than fits drops the excess and counts an overrun; reading
more than is available returns what there is and counts an underrun.
)doc")
      .def(py::init<std::size_t, int, const py::object&>(), py::arg("capacity"),
           py::arg("channels") = 1, py::arg("dtype") = py::dtype::of<float>(),
           "capacity is in frames and must be a power of two.")
      .def("write", &AudioRing::write, py::arg("data"),
           "Copies frames in; returns how many were written (the rest are dropped and counted).")
      .def("read", &AudioRing::read, py::arg("frames"),
           "Returns up to `frames` frames as a new array.")
      .def("read_into", &AudioRing::read_into, py::arg("out"),
           "Fills `out` from the ring; returns the number of frames written into it.")
      .def("discard", &AudioRing::discard, py::arg("frames"),
           "Drops up to `frames` readable frames; returns how many were dropped.")
      .def_property_readonly("available", &AudioRing::available, "Frames ready to read.")
      .def_property_readonly("free", &AudioRing::free, "Frames that can be written.")
      .def_property_readonly("capacity", &AudioRing::capacity)
      .def_property_readonly("channels", &AudioRing::channels)
      .def_property_readonly("dtype", &AudioRing::dtype)
      .def_property_readonly("overruns", &AudioRing::overruns, "Writes that did not fit whole.")
      .def_property_readonly("overrun_frames", &AudioRing::overrun_frames,
                             "Frames dropped on write.")
      .def_property_readonly("underruns", &AudioRing::underruns, "Reads that came back short.")
      .def_property_readonly("underrun_frames", &AudioRing::underrun_frames,
                             "Frames asked for but not available.")
      .def_property_readonly("frames_written", &AudioRing::frames_written)
      .def_property_readonly("frames_read", &AudioRing::frames_read)
      .def("__repr__", &AudioRing::repr);
}

}  // namespace rtvoice::bind
