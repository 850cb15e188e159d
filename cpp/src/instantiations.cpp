// Explicit instantiations of the header-only templates for the sample types the core uses, so
// that every member is compiled (and warned about) once in the core library.
#include <cstdint>

#include "rtvoice/framer.hpp"
#include "rtvoice/spsc_ring.hpp"

namespace rtvoice {
template class SpscRing<float>;
template class SpscRing<std::int16_t>;
template class Framer<float>;
template class Framer<std::int16_t>;
}  // namespace rtvoice
