// Shared helpers of the pybind11 module: the one place where numpy meets the C++ core.
// Audio arrays at the boundary are (frames,) for mono or (frames, channels) interleaved,
// float32 or int16, C-contiguous. Anything else is rejected; nothing is cast silently.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace rtvoice::bind {

namespace py = pybind11;

enum class SampleType { Float32, Int16 };

inline const char* sample_type_name(SampleType t) {
  return t == SampleType::Float32 ? "float32" : "int16";
}

// Parses a dtype-like argument (numpy.float32, "int16", numpy.dtype(...)).
inline SampleType parse_sample_type(const py::object& dtype_like) {
  py::dtype dt = py::dtype::from_args(dtype_like);
  if (dt.is(py::dtype::of<float>()) || dt.equal(py::dtype::of<float>())) return SampleType::Float32;
  if (dt.equal(py::dtype::of<std::int16_t>())) return SampleType::Int16;
  throw py::type_error("dtype must be numpy.float32 or numpy.int16, got " +
                       py::str(dt).cast<std::string>());
}

inline SampleType array_sample_type(const py::array& a, const char* what) {
  if (a.dtype().equal(py::dtype::of<float>())) return SampleType::Float32;
  if (a.dtype().equal(py::dtype::of<std::int16_t>())) return SampleType::Int16;
  throw py::type_error(std::string(what) + " must be a float32 or int16 numpy array, got dtype " +
                       py::str(a.dtype()).cast<std::string>());
}

// Validates an audio array against `channels` and returns its frame count.
inline std::size_t audio_frames(const py::array& a, int channels, const char* what) {
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(what) +
                          " must be C-contiguous (use numpy.ascontiguousarray)");
  }
  if (a.ndim() == 1) {
    if (channels != 1) {
      throw py::value_error(std::string(what) + " is 1-D but " + std::to_string(channels) +
                            " channels were configured; pass shape (frames, channels)");
    }
    return static_cast<std::size_t>(a.shape(0));
  }
  if (a.ndim() == 2) {
    if (a.shape(1) != channels) {
      throw py::value_error(std::string(what) + " has " + std::to_string(a.shape(1)) +
                            " channels, expected " + std::to_string(channels));
    }
    return static_cast<std::size_t>(a.shape(0));
  }
  throw py::value_error(std::string(what) +
                        " must be 1-D (frames,) or 2-D (frames, channels), got " +
                        std::to_string(a.ndim()) + " dimensions");
}

// Checks dtype, layout and channels; returns the frame count.
template <typename T>
std::size_t check_audio(const py::array& a, int channels, const char* what) {
  if (!a.dtype().equal(py::dtype::of<T>())) {
    throw py::type_error(std::string(what) + " must have dtype " +
                         py::str(py::dtype::of<T>()).cast<std::string>() + ", got " +
                         py::str(a.dtype()).cast<std::string>());
  }
  return audio_frames(a, channels, what);
}

// A new (frames,) or (frames, channels) array.
template <typename T>
py::array_t<T> new_audio(std::size_t frames, int channels) {
  if (channels == 1) return py::array_t<T>({static_cast<py::ssize_t>(frames)});
  return py::array_t<T>({static_cast<py::ssize_t>(frames), static_cast<py::ssize_t>(channels)});
}

// Turns concurrent use of a single-owner side into a clear error instead of silent corruption.
class ExclusiveUse {
 public:
  ExclusiveUse(std::atomic<bool>& flag, const char* what) : flag_(flag) {
    if (flag_.exchange(true, std::memory_order_acquire)) {
      throw std::runtime_error(
          std::string(what) + " was called from two threads at once; this side has a single owner");
    }
  }
  ~ExclusiveUse() { flag_.store(false, std::memory_order_release); }
  ExclusiveUse(const ExclusiveUse&) = delete;
  ExclusiveUse& operator=(const ExclusiveUse&) = delete;

 private:
  std::atomic<bool>& flag_;
};

void init_ring(py::module_& m);
void init_framer(py::module_& m);
void init_pipelines(py::module_& m);
void init_opus(py::module_& m);
void init_resampler(py::module_& m);
void init_jitter(py::module_& m);
void init_processing(py::module_& m);

}  // namespace rtvoice::bind
