// The per-weight gradient proxies of one training step, every target in one OpenMP pass.
// Part of bingo's C++ CPU backend (csrc/bingo_cpu.cpp, one translation unit).
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace bingo_cpu {

// One training step's per-weight proxies (bingo.proxies) for elements [lo, hi), in place,
// one pass over memory: fisher <- decay * fisher + g^2, reset += |g (target - w)|, and
// with Movement, movement -= g w (a search may leave movement out: m is then unused).
// Restrict-qualified and simd so that it runs in vector lanes on every path (the serial
// branch of an `omp parallel for simd if` stayed scalar: 2 ns per element against 0.6).
template <bool Movement>
inline void proxy_block(float* __restrict__ f, float* __restrict__ r,
                               float* __restrict__ m, const float* __restrict__ g,
                               const float* __restrict__ w, const float* __restrict__ t,
                               float d, int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) {
        const float gi = g[i], wi = w[i];
        f[i] = f[i] * d + gi * gi;
        r[i] += std::fabs(gi * (t[i] - wi));
        if constexpr (Movement) m[i] -= gi * wi;
    }
}

// Movement alone (movement -= g w) for elements [lo, hi): what the steps between two
// full proxy updates fold in (bingo.proxies: the signed movement sum needs every step).
inline void movement_block(float* __restrict__ m, const float* __restrict__ g,
                                  const float* __restrict__ w, int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) m[i] -= g[i] * w[i];
}

// One elementwise pass over every target in one OpenMP region, over (target, chunk)
// items. Each target is `per_target` float32 C-contiguous addresses of sizes[i]
// elements, checked by the Python caller (bingo.fused.foreach): passing addresses rather
// than arrays saves ~15 us of array conversions per target, which at batch 64 was most
// of the update's cost. block(addresses of target i, lo, hi) does the arithmetic.
template <typename Block>
inline void foreach_chunk(const char* name, const std::vector<int64_t>& sizes,
                          const std::vector<uintptr_t>& addresses, size_t per_target,
                          Block block) {
    if (addresses.size() != per_target * sizes.size())
        throw std::invalid_argument(std::string(name) + " takes " + std::to_string(per_target) +
                                    " addresses per size");
    constexpr int64_t chunk = 8192;  // threads pay off from 2 items up
    std::vector<std::pair<size_t, int64_t>> items;
    for (size_t i = 0; i < sizes.size(); ++i) {
        if (sizes[i] < 0) throw std::invalid_argument("sizes must be non-negative");
        for (int64_t lo = 0; lo < sizes[i]; lo += chunk) items.emplace_back(i, lo);
    }
    const int64_t n_items = static_cast<int64_t>(items.size());
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (n_items > 2)
    for (int64_t j = 0; j < n_items; ++j) {
        const auto [i, lo] = items[j];
        block(&addresses[per_target * i], lo, std::min(sizes[i], lo + chunk));
    }
}

inline float* f32(uintptr_t address) { return reinterpret_cast<float*>(address); }

// The proxies of one step over every target: per target six addresses (fisher, reset,
// movement written in place; grad, weight, target read), or five without movement.
template <bool Movement>
inline void proxy_update_all(const std::vector<int64_t>& sizes,
                             const std::vector<uintptr_t>& addresses, float d) {
    constexpr int per = Movement ? 6 : 5, g = per - 3;  // g: where grad, weight, target start
    foreach_chunk("proxy_update", sizes, addresses, per,
                  [d](const uintptr_t* a, int64_t lo, int64_t hi) {
                      proxy_block<Movement>(f32(a[0]), f32(a[1]), Movement ? f32(a[2]) : nullptr,
                                            f32(a[g]), f32(a[g + 1]), f32(a[g + 2]), d, lo, hi);
                  });
}

inline void proxy_update(const std::vector<int64_t>& sizes, const std::vector<uintptr_t>& addresses,
                  double decay, bool movement) {
    const float d = static_cast<float>(decay);
    if (movement) proxy_update_all<true>(sizes, addresses, d);
    else proxy_update_all<false>(sizes, addresses, d);
}

// Movement alone over every target: three addresses per target (movement written in
// place; grad, weight read).
inline void movement_update(const std::vector<int64_t>& sizes,
                     const std::vector<uintptr_t>& addresses) {
    foreach_chunk("movement_update", sizes, addresses, 3,
                  [](const uintptr_t* a, int64_t lo, int64_t hi) {
                      movement_block(f32(a[0]), f32(a[1]), f32(a[2]), lo, hi);
                  });
}

}  // namespace bingo_cpu
