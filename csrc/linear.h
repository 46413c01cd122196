// A Linear layer under K variants from one shared input: X W^T once plus each variant's
// sparse correction.
// Part of bingo's C++ CPU backend (csrc/bingo_cpu.cpp, one translation unit).
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <pybind11/numpy.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "arrays.h"
#include "philox.h"

namespace py = pybind11;

namespace bingo_cpu {

// One reset weight of a (variant, row): its input feature and initial - current.
struct Reset {
    int32_t i;
    float d;
};

constexpr int64_t TILE = 64;  // batch columns held in registers (8 AVX2 vectors)
constexpr size_t PREFETCH = 6;  // resets ahead whose input row is prefetched

// dst[0..n) = src[0..n) + extra + sum over resets of d * x[i * TILE + 0..TILE): one row of
// one variant over one tile of the batch. x is that tile of the input, packed [in, TILE]
// (zero-padded past the batch) so that it is contiguous in cache. Portable version.
inline void correct_tile_scalar(float* dst, const float* src, const Reset* resets, size_t count,
                         const float* x, int64_t n, float extra) {
    float acc[TILE] = {};
    for (int64_t b = 0; b < n; ++b) acc[b] = src[b] + extra;
    for (size_t k = 0; k < count; ++k)
        for (int64_t b = 0; b < TILE; ++b) acc[b] += resets[k].d * x[resets[k].i * TILE + b];
    std::copy(acc, acc + n, dst);
}

#if defined(__x86_64__)
// The same with the tile in 8 AVX2 registers and fused multiply-adds.
__attribute__((target("avx2,fma")))
inline void correct_tile_avx2(float* dst, const float* src, const Reset* resets, size_t count,
                       const float* x, int64_t n, float extra) {
    static_assert(TILE == 64, "8 registers of 8 floats");
    alignas(32) float tile[TILE] = {};  // staging for a partial tile only
    const bool full = n == TILE;
    if (!full) std::copy(src, src + n, tile);
    const float* from = full ? src : tile;
    const __m256 e = _mm256_set1_ps(extra);
    __m256 acc[8];
    for (int v = 0; v < 8; ++v) acc[v] = _mm256_add_ps(_mm256_loadu_ps(from + 8 * v), e);
    for (size_t k = 0; k < count; ++k) {
        if (k + PREFETCH < count) {  // the input rows are random: fetch a few resets ahead
            const char* ahead = reinterpret_cast<const char*>(x + resets[k + PREFETCH].i * TILE);
            for (int line = 0; line < 4; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
        }
        const __m256 d = _mm256_set1_ps(resets[k].d);
        const float* xr = x + resets[k].i * TILE;
        for (int v = 0; v < 8; ++v) acc[v] = _mm256_fmadd_ps(d, _mm256_loadu_ps(xr + 8 * v), acc[v]);
    }
    float* to = full ? dst : tile;
    for (int v = 0; v < 8; ++v) _mm256_storeu_ps(to + 8 * v, acc[v]);
    if (!full) std::copy(tile, tile + n, dst);
}
#endif

inline void correct_tile(float* dst, const float* src, const Reset* resets, size_t count,
                  const float* x, int64_t n, float extra) {
#if defined(__x86_64__)
    if (HAVE_AVX2_FMA) return correct_tile_avx2(dst, src, resets, count, x, n, extra);
#endif
    correct_tile_scalar(dst, src, resets, count, x, n, extra);
}

// Buffers linear_shared_t reuses from call to call (on the calling thread), so that a
// search step does not fault in fresh pages for them every time.
struct SharedBuffers {
    std::vector<uint32_t> bits;     // [V, spans, 4]: each variant's reset bits, once
    std::vector<int64_t> offsets;   // [V * O + 1]: where each (variant, row)'s resets start
    std::vector<Reset> resets;      // every (variant, row)'s resets, in row order
    std::vector<float> packed;      // [tiles, in, TILE]: x tile by tile, zero-padded
};

// A Linear layer whose input x is the same for every variant, feature-major:
//   out_t[j, o, :] = base_t[o, :] + sum over reset (o, i) of (initial - weight)[o, i] * x_t[i, :]
// (+ bias_delta[o] when a whole unit is reset, neuron granularity). base_t = (x W^T + b)^T is
// computed once by the caller, so the K variants cost one dense product plus (K * p) of one
// in sparse corrections instead of K dense products.
// Three passes: each variant's reset bits over the whole weight (each Philox call once),
// each (variant, row)'s resets gathered from them into one flat list, then the
// corrections tile by tile of the batch, with the tile of x packed contiguously.
inline void linear_shared_t(const py::array& x_t, const py::array& weight, const py::array& initial,
                     const py::array& base_t, const py::array& bias_delta, py::array out_t,
                     uint64_t seed, uint64_t step, std::vector<uint32_t> variants, int64_t start,
                     int threshold, bool neuron) {
    check_threshold(threshold);
    if (weight.ndim() != 2 || x_t.ndim() != 2 || x_t.shape(0) != weight.shape(1))
        throw std::invalid_argument("x_t must be [in, B] and weight [out, in]");
    const int64_t O = weight.shape(0), I = weight.shape(1), B = x_t.shape(1);
    if (I >= (int64_t{1} << 31)) throw std::invalid_argument("more than 2**31 input features");
    const int64_t V = static_cast<int64_t>(variants.size());
    const float* x = in_f32(x_t, I * B, "x_t");
    const float* w = in_f32(weight, O * I, "weight");
    const float* w0 = in_f32(initial, O * I, "initial");
    const float* base = in_f32(base_t, O * B, "base_t");
    const float* db = bias_delta.size() ? in_f32(bias_delta, O, "bias_delta") : nullptr;
    float* o = inplace_f32(out_t, V * O * B, "out_t");
    const uint8_t th = static_cast<uint8_t>(threshold);
    py::gil_scoped_release release;
    static thread_local SharedBuffers buf;  // the calling thread's; the OpenMP workers
    auto& offsets = buf.offsets;            // reach it through these references only
    offsets.assign(V * O + 1, 0);
    std::vector<uint8_t> unit_reset(V * O, 0);
    if (neuron) {  // one decision per row (element start + r): reset rows take every input
        for_each_reset(seed, step, variants, start, O, th,
                       [&](int64_t r, size_t j) { unit_reset[j * O + r] = 1; });
        for (int64_t jr = 0; jr < V * O; ++jr)
            offsets[jr + 1] = offsets[jr] + (unit_reset[jr] ? I : 0);
        buf.resets.resize(static_cast<size_t>(offsets[V * O]));
        Reset* all = buf.resets.data();  // buf is this thread's: not named in the workers
#pragma omp parallel for schedule(static)
        for (int64_t jr = 0; jr < V * O; ++jr) {
            const int64_t r = jr % O;
            Reset* list = all + offsets[jr];
            if (unit_reset[jr])
                for (int64_t i = 0; i < I; ++i)
                    list[i] = {static_cast<int32_t>(i), w0[r * I + i] - w[r * I + i]};
        }
    } else if (O * I > 0) {
        const int64_t first = start / SPAN, spans = (start + O * I - 1) / SPAN - first + 1;
        auto& bits = buf.bits;
        bits.resize(static_cast<size_t>(V * spans * 4));
#pragma omp parallel for collapse(2) schedule(static)
        for (int64_t j = 0; j < V; ++j)
            for (int64_t s = 0; s < spans; s += 2) {  // two spans a call, the last maybe one
                const uint64_t group0 = static_cast<uint64_t>((first + s) * LANES);
                uint32_t* into = &bits[(j * spans + s) * 4];
                if (s + 1 < spans) reset_bits2(seed, step, variants[j], group0, th, into);
                else reset_bits(seed, step, variants[j], group0, th, into);
            }
        // fn(bits, span start, e_lo, e_hi) for each span holding row r = jr % O of
        // variant j = jr / O (elements [e_lo, e_hi)), in visiting order
        auto row_spans = [&](int64_t jr, auto&& fn) {
            const int64_t j = jr / O, e_lo = start + (jr % O) * I, e_hi = e_lo + I;
            for (int64_t s = e_lo / SPAN; s * SPAN < e_hi; ++s)
                fn(&bits[(j * spans + s - first) * 4], s * SPAN, e_lo, e_hi);
        };
#pragma omp parallel for schedule(static)
        for (int64_t jr = 0; jr < V * O; ++jr) {  // whole spans by popcount, the ends by bit
            int64_t count = 0;
            row_spans(jr, [&](const uint32_t* b, int64_t base, int64_t e_lo, int64_t e_hi) {
                if (base >= e_lo && base + SPAN <= e_hi)
                    count += __builtin_popcount(b[0]) + __builtin_popcount(b[1]) +
                             __builtin_popcount(b[2]) + __builtin_popcount(b[3]);
                else
                    for_each_set(b, base, e_lo, e_hi, [&](int64_t) { ++count; });
            });
            offsets[jr + 1] = count;
        }
        for (int64_t jr = 0; jr < V * O; ++jr) offsets[jr + 1] += offsets[jr];
        buf.resets.resize(static_cast<size_t>(offsets[V * O]));
        Reset* all = buf.resets.data();
#pragma omp parallel for schedule(static)
        for (int64_t jr = 0; jr < V * O; ++jr) {
            Reset* list = all + offsets[jr];
            const float* wr = w + (jr % O) * I;
            const float* w0r = w0 + (jr % O) * I;
            row_spans(jr, [&](const uint32_t* b, int64_t base, int64_t e_lo, int64_t e_hi) {
                for_each_set(b, base, e_lo, e_hi, [&](int64_t e) {
                    const int64_t i = e - e_lo;
                    *list++ = {static_cast<int32_t>(i), w0r[i] - wr[i]};
                });
            });
        }
    }
    const int64_t tiles = (B + TILE - 1) / TILE;
    auto& packed = buf.packed;
    packed.assign(static_cast<size_t>(tiles * I * TILE), 0.0f);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < I; ++i)
        for (int64_t b = 0; b < B; ++b) packed[((b / TILE) * I + i) * TILE + b % TILE] = x[i * B + b];
    const Reset* resets = buf.resets.data();
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t jr = 0; jr < V * O; ++jr) {  // rows outer: writes stream, measured faster
        for (int64_t t = 0; t < tiles; ++t) {
            const int64_t r = jr % O, b0 = t * TILE;
            const float extra = (db && unit_reset[jr]) ? db[r] : 0.0f;
            correct_tile(o + jr * B + b0, base + r * B + b0, resets + offsets[jr],
                         static_cast<size_t>(offsets[jr + 1] - offsets[jr]),
                         packed.data() + t * I * TILE, std::min(TILE, B - b0), extra);
        }
    }
}

}  // namespace bingo_cpu
