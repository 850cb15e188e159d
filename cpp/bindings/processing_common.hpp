// Conversion of the voice processing types, shared by bind_processing.cpp and
// bind_pipelines.cpp (Uplink.set_processing).
#pragma once

#include <optional>
#include <string>

#include "common.hpp"
#include "rtvoice/audio_processing.hpp"

namespace rtvoice::bind {

inline py::dict processing_stats_dict(const ProcessingStats& s, ProcessingBackend backend) {
  py::dict d;
  d["backend"] = backend_name(backend);
  d["library"] = backend_library(backend);
  d["aec"] = s.aec;
  d["noise_suppression"] = s.noise_suppression;
  d["agc"] = s.agc;
  d["high_pass"] = s.high_pass;
  d["frames"] = s.frames;
  d["render_frames"] = s.render_frames;
  d["active_render_frames"] = s.active_render_frames;
  d["backend_errors"] = s.backend_errors;
  d["echo_suppression_db"] = s.echo_suppression_db;
  d["backend_erle_db"] = s.backend_erle_db;
  d["backend_delay_ms"] = s.backend_delay_ms;
  d["stream_delay_ms"] = s.stream_delay_ms;
  d["capture_dbfs"] = s.capture_dbfs;
  d["output_dbfs"] = s.output_dbfs;
  d["render_dbfs"] = s.render_dbfs;
  return d;
}

// None means the preferred backend of this build (the first of available_backends()).
inline ProcessingBackend backend_or_default(const std::optional<std::string>& name) {
  if (name) return parse_backend(*name);
  return available_backends().front();
}

}  // namespace rtvoice::bind
