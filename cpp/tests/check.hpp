// Minimal checks for the C++ test programs (run by ctest, also under ASan/UBSan and TSan): a failed
// check prints where and what, and the program exits non-zero.
#pragma once

#include <cstdio>
#include <cstdlib>

#define RTVOICE_CHECK(cond)                                                         \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

#define RTVOICE_CHECK_EQ(a, b)                                                                   \
  do {                                                                                           \
    const auto rtvoice_a_ = (a);                                                                 \
    const auto rtvoice_b_ = (b);                                                                 \
    if (!(rtvoice_a_ == rtvoice_b_)) {                                                           \
      std::fprintf(stderr, "%s:%d: check failed: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, \
                   #a, #b, static_cast<long long>(rtvoice_a_),                                   \
                   static_cast<long long>(rtvoice_b_));                                          \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)
