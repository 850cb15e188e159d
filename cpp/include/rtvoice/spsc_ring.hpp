// Lock-free single-producer single-consumer ring of interleaved audio frames.
//
// Threading contract: exactly one producer thread calls the producer methods (write,
// write_regions/commit_write, free_frames) and exactly one consumer thread calls the consumer
// methods (read, read_regions/commit_read, available_frames, discard). The counters and capacity
// may be read from any thread. No method blocks, locks or allocates after construction.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace rtvoice {

inline constexpr std::size_t kCacheLine = 64;

template <typename T>
class SpscRing {
 public:
  // Two contiguous pieces of the ring (the second is empty unless the span wraps).
  template <typename P>
  struct Span {
    P* first = nullptr;
    std::size_t first_frames = 0;
    P* second = nullptr;
    std::size_t second_frames = 0;
    std::size_t frames() const { return first_frames + second_frames; }
  };

  // capacity_frames must be a power of two; one frame holds `channels` samples.
  SpscRing(std::size_t capacity_frames, std::size_t channels)
      : capacity_(capacity_frames), mask_(capacity_frames - 1), channels_(channels) {
    if (capacity_frames < 2 || (capacity_frames & (capacity_frames - 1)) != 0) {
      throw std::invalid_argument("ring capacity must be a power of two >= 2");
    }
    if (channels == 0 || channels > 64) {
      throw std::invalid_argument("ring channels must be between 1 and 64");
    }
    if (capacity_frames > (std::size_t{1} << 40) / channels) {
      throw std::invalid_argument("ring capacity is too large");
    }
    data_ = std::make_unique<T[]>(capacity_frames * channels);
  }

  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;

  std::size_t capacity() const { return capacity_; }
  std::size_t channels() const { return channels_; }

  // ---- producer side ----

  // Frames that can be written now. Producer thread.
  std::size_t free_frames() {
    const std::uint64_t w = write_.load(std::memory_order_relaxed);
    cached_read_ = read_.load(std::memory_order_acquire);
    return capacity_ - static_cast<std::size_t>(w - cached_read_);
  }

  // Writable space of up to max_frames frames, without copying. Producer thread.
  Span<T> write_regions(std::size_t max_frames) {
    const std::uint64_t w = write_.load(std::memory_order_relaxed);
    std::size_t room = capacity_ - static_cast<std::size_t>(w - cached_read_);
    if (room < max_frames) {
      cached_read_ = read_.load(std::memory_order_acquire);
      room = capacity_ - static_cast<std::size_t>(w - cached_read_);
    }
    return split<T>(w, std::min(room, max_frames));
  }

  // Publishes frames written into write_regions(). Producer thread.
  void commit_write(std::size_t frames) {
    write_.store(write_.load(std::memory_order_relaxed) + frames, std::memory_order_release);
  }

  // Copies up to `frames` frames in; what does not fit is dropped and counted as overrun.
  // Returns the frames written. Producer thread.
  std::size_t write(const T* src, std::size_t frames) {
    Span<T> s = write_regions(frames);
    const std::size_t n = s.frames();
    // src may be null when nothing is written (an empty chunk); memcpy must not see it.
    if (s.first_frames != 0) std::memcpy(s.first, src, s.first_frames * channels_ * sizeof(T));
    if (s.second_frames != 0) {
      std::memcpy(s.second, src + s.first_frames * channels_,
                  s.second_frames * channels_ * sizeof(T));
    }
    commit_write(n);
    if (n < frames) {
      overrun_frames_.fetch_add(frames - n, std::memory_order_relaxed);
      overrun_events_.fetch_add(1, std::memory_order_relaxed);
    }
    return n;
  }

  // ---- consumer side ----

  // Frames that can be read now. Consumer thread.
  std::size_t available_frames() {
    const std::uint64_t r = read_.load(std::memory_order_relaxed);
    cached_write_ = write_.load(std::memory_order_acquire);
    return static_cast<std::size_t>(cached_write_ - r);
  }

  // Readable data of up to max_frames frames, without copying. Consumer thread.
  Span<const T> read_regions(std::size_t max_frames) {
    const std::uint64_t r = read_.load(std::memory_order_relaxed);
    std::size_t avail = static_cast<std::size_t>(cached_write_ - r);
    if (avail < max_frames) {
      cached_write_ = write_.load(std::memory_order_acquire);
      avail = static_cast<std::size_t>(cached_write_ - r);
    }
    return split<const T>(r, std::min(avail, max_frames));
  }

  // Releases frames seen through read_regions(). Consumer thread.
  void commit_read(std::size_t frames) {
    read_.store(read_.load(std::memory_order_relaxed) + frames, std::memory_order_release);
  }

  // Copies up to `frames` frames out; a short read is counted as an underrun. Returns the frames
  // read. Consumer thread.
  std::size_t read(T* dst, std::size_t frames) {
    Span<const T> s = read_regions(frames);
    const std::size_t n = s.frames();
    // dst may be null when nothing is read (an empty request); memcpy must not see it.
    if (s.first_frames != 0) std::memcpy(dst, s.first, s.first_frames * channels_ * sizeof(T));
    if (s.second_frames != 0) {
      std::memcpy(dst + s.first_frames * channels_, s.second,
                  s.second_frames * channels_ * sizeof(T));
    }
    commit_read(n);
    if (n < frames) record_underrun(frames - n);
    return n;
  }

  // Counts a consumer that wanted `missing` more frames than there were. Consumer thread.
  void record_underrun(std::size_t missing) {
    underrun_frames_.fetch_add(missing, std::memory_order_relaxed);
    underrun_events_.fetch_add(1, std::memory_order_relaxed);
  }

  // Drops up to `frames` readable frames. Consumer thread.
  std::size_t discard(std::size_t frames) {
    const std::size_t n = std::min(frames, available_frames());
    commit_read(n);
    return n;
  }

  // ---- any thread ----
  std::uint64_t frames_written() const { return write_.load(std::memory_order_acquire); }
  std::uint64_t frames_read() const { return read_.load(std::memory_order_acquire); }
  std::uint64_t overrun_frames() const { return overrun_frames_.load(std::memory_order_relaxed); }
  std::uint64_t overrun_events() const { return overrun_events_.load(std::memory_order_relaxed); }
  std::uint64_t underrun_frames() const { return underrun_frames_.load(std::memory_order_relaxed); }
  std::uint64_t underrun_events() const { return underrun_events_.load(std::memory_order_relaxed); }

 private:
  template <typename P>
  Span<P> split(std::uint64_t index, std::size_t frames) const {
    const std::size_t pos = static_cast<std::size_t>(index) & mask_;
    const std::size_t first = std::min(frames, capacity_ - pos);
    Span<P> s;
    s.first = data_.get() + pos * channels_;
    s.first_frames = first;
    s.second = data_.get();
    s.second_frames = frames - first;
    return s;
  }

  const std::size_t capacity_;
  const std::size_t mask_;
  const std::size_t channels_;
  std::unique_ptr<T[]> data_;

  // Producer-owned line: its index and its cached copy of the consumer's index.
  alignas(kCacheLine) std::atomic<std::uint64_t> write_{0};
  std::uint64_t cached_read_ = 0;
  std::atomic<std::uint64_t> overrun_frames_{0};
  std::atomic<std::uint64_t> overrun_events_{0};

  // Consumer-owned line.
  alignas(kCacheLine) std::atomic<std::uint64_t> read_{0};
  std::uint64_t cached_write_ = 0;
  std::atomic<std::uint64_t> underrun_frames_{0};
  std::atomic<std::uint64_t> underrun_events_{0};

  char pad_[kCacheLine - sizeof(std::atomic<std::uint64_t>) * 3 - sizeof(std::uint64_t)]{};
};

}  // namespace rtvoice
