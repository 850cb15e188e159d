// Cuts a stream of arbitrary-size chunks into exact fixed-duration frames.
//
// Each frame is reported with the stream index of its first sample frame, counted from the
// start (or from reset()); RTP timestamps derive from it, never from wall time. Owned by one
// thread. No allocation after construction: a frame is handed out either as a pointer into the
// caller's chunk (when it lies wholly inside it) or into the framer's one-frame buffer.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

namespace rtvoice {

template <typename T>
class Framer {
 public:
  Framer(int sample_rate_hz, int frame_ms, int channels)
      : sample_rate_hz_(sample_rate_hz), frame_ms_(frame_ms), channels_(channels) {
    if (sample_rate_hz < 1000 || sample_rate_hz > 384000) {
      throw std::invalid_argument("sample_rate must be between 1000 and 384000 Hz, got " +
                                  std::to_string(sample_rate_hz));
    }
    if (frame_ms < 1 || frame_ms > 1000) {
      throw std::invalid_argument("frame_ms must be between 1 and 1000, got " +
                                  std::to_string(frame_ms));
    }
    if (channels < 1 || channels > 64) {
      throw std::invalid_argument("channels must be between 1 and 64, got " +
                                  std::to_string(channels));
    }
    const long long samples = static_cast<long long>(sample_rate_hz) * frame_ms;
    if (samples % 1000 != 0) {
      throw std::invalid_argument(std::to_string(frame_ms) +
                                  " ms is not a whole number of samples at " +
                                  std::to_string(sample_rate_hz) + " Hz");
    }
    frame_frames_ = static_cast<std::size_t>(samples / 1000);
    buffer_ = std::make_unique<T[]>(frame_frames_ * static_cast<std::size_t>(channels));
  }

  int sample_rate_hz() const { return sample_rate_hz_; }
  int frame_ms() const { return frame_ms_; }
  int channels() const { return channels_; }
  std::size_t frame_frames() const { return frame_frames_; }
  std::size_t pending_frames() const { return pending_; }
  std::uint64_t next_frame_index() const { return next_index_; }

  // Feeds `frames` sample frames; calls on_frame(const T* frame, std::uint64_t first_index) once
  // per completed frame, in order. The pointer is valid only during the call. Returns the number
  // of frames emitted.
  template <typename F>
  std::size_t push(const T* data, std::size_t frames, F&& on_frame) {
    const std::size_t ch = static_cast<std::size_t>(channels_);
    std::size_t emitted = 0;
    if (frames == 0) return 0;  // data may be null for an empty chunk
    if (pending_ != 0) {
      const std::size_t take = std::min(frames, frame_frames_ - pending_);
      std::memcpy(buffer_.get() + pending_ * ch, data, take * ch * sizeof(T));
      pending_ += take;
      data += take * ch;
      frames -= take;
      if (pending_ < frame_frames_) return 0;
      emit(buffer_.get(), on_frame);
      pending_ = 0;
      ++emitted;
    }
    while (frames >= frame_frames_) {
      emit(data, on_frame);
      data += frame_frames_ * ch;
      frames -= frame_frames_;
      ++emitted;
    }
    if (frames != 0) {
      std::memcpy(buffer_.get(), data, frames * ch * sizeof(T));
      pending_ = frames;
    }
    return emitted;
  }

  // Emits the pending partial frame padded with zeros, if there is one. Returns whether a frame
  // was emitted.
  template <typename F>
  bool flush(F&& on_frame) {
    if (pending_ == 0) return false;
    const std::size_t ch = static_cast<std::size_t>(channels_);
    std::memset(static_cast<void*>(buffer_.get() + pending_ * ch), 0,
                (frame_frames_ - pending_) * ch * sizeof(T));
    emit(buffer_.get(), on_frame);
    pending_ = 0;
    return true;
  }

  // Drops any pending samples; the next frame starts at start_index.
  void reset(std::uint64_t start_index = 0) {
    pending_ = 0;
    next_index_ = start_index;
  }

 private:
  template <typename F>
  void emit(const T* frame, F& on_frame) {
    on_frame(frame, next_index_);
    next_index_ += frame_frames_;
  }

  int sample_rate_hz_;
  int frame_ms_;
  int channels_;
  std::size_t frame_frames_ = 0;
  std::size_t pending_ = 0;
  std::uint64_t next_index_ = 0;
  std::unique_ptr<T[]> buffer_;
};

}  // namespace rtvoice
