// The rtvoice._core extension module: one init_<component> per component.
#include "common.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "rtvoice native audio core";
#ifdef RTVOICE_VERSION
  m.attr("__version__") = RTVOICE_VERSION;
#endif
  rtvoice::bind::init_ring(m);
  rtvoice::bind::init_framer(m);
  rtvoice::bind::init_opus(m);
  rtvoice::bind::init_resampler(m);
  rtvoice::bind::init_jitter(m);
  rtvoice::bind::init_pipelines(m);
  rtvoice::bind::init_processing(m);
}
