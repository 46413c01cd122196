// bingo's C++ CPU backend: subset masks, masked weights, the shared-input Linear
// correction, and fused significance accumulation.
//
// Mirrors bingo/reference.py: the same Philox-4x32-10 stream (bingo/subsets.py
// documents it), so masks and masked weights are bit-identical, and the same float32
// update order (variant by variant) in accumulation. Arrays arrive through the
// buffer protocol (numpy views of torch tensors), so the build needs only pybind11,
// never torch.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <stdexcept>
#include <vector>

namespace py = pybind11;

namespace {

constexpr uint32_t ROUND_A = 0xD2511F53u, ROUND_B = 0xCD9E8D57u;
constexpr uint32_t KEY_A = 0x9E3779B9u, KEY_B = 0xBB67AE85u;
constexpr int ROUNDS = 10;
constexpr int64_t PER_CALL = 16;  // one byte decision per element, 16 per Philox call

constexpr int LANES = 8;         // Philox calls computed side by side (one AVX2 register wide)

// The decisions of one span (LANES consecutive Philox calls = SPAN elements) of one
// variant, as four bitmasks: bit 4 * l + b of bits[w] says whether element
// 16 * l + 4 * w + b of the span is reset (byte b of word w of call l is < threshold).
constexpr int64_t SPAN = LANES * PER_CALL;

inline int64_t span_element(int w, int bit) { return PER_CALL * (bit >> 2) + 4 * w + (bit & 3); }

void reset_bits_scalar(uint64_t seed, uint64_t step, uint32_t variant, uint64_t group0,
                       uint8_t threshold, uint32_t bits[4]) {
    bits[0] = bits[1] = bits[2] = bits[3] = 0;
    for (int l = 0; l < LANES; ++l) {
        uint32_t c0 = static_cast<uint32_t>(group0 + l), c1 = variant;
        uint32_t c2 = static_cast<uint32_t>(step), c3 = static_cast<uint32_t>(step >> 32);
        uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
        for (int r = 0; r < ROUNDS; ++r) {
            const uint64_t p0 = static_cast<uint64_t>(c0) * ROUND_A;
            const uint64_t p2 = static_cast<uint64_t>(c2) * ROUND_B;
            const uint32_t n0 = static_cast<uint32_t>(p2 >> 32) ^ c1 ^ k0;
            const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
            c1 = static_cast<uint32_t>(p2);
            c3 = static_cast<uint32_t>(p0);
            c0 = n0;
            c2 = n2;
            k0 += KEY_A;
            k1 += KEY_B;
        }
        const uint32_t words[4] = {c0, c1, c2, c3};
        for (int w = 0; w < 4; ++w)
            for (int b = 0; b < 4; ++b)
                if (static_cast<uint8_t>(words[w] >> (8 * b)) < threshold)
                    bits[w] |= 1u << (4 * l + b);
    }
}

#if defined(__x86_64__)
// The same LANES calls in AVX2 registers, one call per 32-bit lane. _mm256_mul_epu32
// multiplies the even lanes only, so odd lanes are shifted down for a second multiply
// and the low and high halves are blended back in lane order.
__attribute__((target("avx2")))
inline void mul_hi_lo(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
    const __m256i even = _mm256_mul_epu32(a, m);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// Bit i of the result: unsigned byte i of v is < threshold (threshold >= 1).
__attribute__((target("avx2")))
inline uint32_t bytes_below(__m256i v, __m256i threshold_minus_1) {
    const __m256i le = _mm256_cmpeq_epi8(_mm256_min_epu8(v, threshold_minus_1), v);
    return static_cast<uint32_t>(_mm256_movemask_epi8(le));
}

__attribute__((target("avx2")))
void reset_bits_avx2(uint64_t seed, uint64_t step, uint32_t variant, uint64_t group0,
                     uint8_t threshold, uint32_t bits[4]) {
    const uint32_t g = static_cast<uint32_t>(group0);
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(g)),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i c1 = _mm256_set1_epi32(static_cast<int>(variant));
    __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(step)));
    __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(step >> 32)));
    const __m256i ma = _mm256_set1_epi32(static_cast<int>(ROUND_A));
    const __m256i mb = _mm256_set1_epi32(static_cast<int>(ROUND_B));
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < ROUNDS; ++r) {
        __m256i hi0, lo0, hi2, lo2;
        mul_hi_lo(c0, ma, hi0, lo0);
        mul_hi_lo(c2, mb, hi2, lo2);
        const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi2, c1),
                                            _mm256_set1_epi32(static_cast<int>(k0)));
        const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3),
                                            _mm256_set1_epi32(static_cast<int>(k1)));
        c1 = lo2;
        c3 = lo0;
        c0 = n0;
        c2 = n2;
        k0 += KEY_A;
        k1 += KEY_B;
    }
    const __m256i t = _mm256_set1_epi8(static_cast<char>(threshold - 1));
    bits[0] = bytes_below(c0, t);
    bits[1] = bytes_below(c1, t);
    bits[2] = bytes_below(c2, t);
    bits[3] = bytes_below(c3, t);
}

const bool HAVE_AVX2 = __builtin_cpu_supports("avx2");
const bool HAVE_AVX2_FMA = HAVE_AVX2 && __builtin_cpu_supports("fma");
#endif

inline void reset_bits(uint64_t seed, uint64_t step, uint32_t variant, uint64_t group0,
                       uint8_t threshold, uint32_t bits[4]) {
#if defined(__x86_64__)
    if (HAVE_AVX2) return reset_bits_avx2(seed, step, variant, group0, threshold, bits);
#endif
    reset_bits_scalar(seed, step, variant, group0, threshold, bits);
}

// Calls fn(i, j) for every element start+i, i in [lo, hi), that variant variants[j]
// resets: per span, variant by variant, so each element sees its variants in order.
// Runs on the caller's thread.
template <typename Fn>
inline void for_each_reset_in(uint64_t seed, uint64_t step, const uint32_t* variants, size_t nv,
                              int64_t start, int64_t lo, int64_t hi, uint8_t threshold, Fn&& fn) {
    const int64_t e_lo = start + lo, e_hi = start + hi;
    uint32_t bits[4];
    for (int64_t base = (e_lo / SPAN) * SPAN; base < e_hi; base += SPAN) {
        const bool whole = base >= e_lo && base + SPAN <= e_hi;
        for (size_t j = 0; j < nv; ++j) {
            reset_bits(seed, step, variants[j], static_cast<uint64_t>(base / PER_CALL), threshold,
                       bits);
            for (int w = 0; w < 4; ++w) {
                for (uint32_t m = bits[w]; m; m &= m - 1) {
                    const int64_t e = base + span_element(w, __builtin_ctz(m));
                    if (whole || (e >= e_lo && e < e_hi)) fn(e - start, j);
                }
            }
        }
    }
}

// for_each_reset_in over elements start..start+numel-1, split across threads in whole
// spans (a thread never recomputes a call another one made, nor touches its elements).
template <typename Fn>
void for_each_reset(uint64_t seed, uint64_t step, const std::vector<uint32_t>& variants,
                    int64_t start, int64_t numel, uint8_t threshold, Fn&& fn) {
    if (numel <= 0) return;
    const int64_t first = start / SPAN, last = (start + numel - 1) / SPAN;
#pragma omp parallel for schedule(static)
    for (int64_t s = first; s <= last; ++s) {
        const int64_t lo = std::max<int64_t>(s * SPAN, start) - start;
        const int64_t hi = std::min<int64_t>((s + 1) * SPAN, start + numel) - start;
        for_each_reset_in(seed, step, variants.data(), variants.size(), start, lo, hi, threshold,
                          fn);
    }
}

std::vector<uint32_t> first_variants(size_t K) {
    std::vector<uint32_t> v(K);
    for (size_t k = 0; k < K; ++k) v[k] = static_cast<uint32_t>(k);
    return v;
}

void check_threshold(int threshold) {
    if (threshold < 1 || threshold > 255) throw std::invalid_argument("threshold must be in [1, 255]");
}

// The float32 state array updated in place: refuse anything pybind11 would have to copy.
float* inplace_f32(py::array& a, int64_t numel, const char* what) {
    if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) ||
        !a.writeable() || a.size() != numel)
        throw std::invalid_argument(std::string(what) +
                                    " must be a writeable C-contiguous float32 array of the "
                                    "state's size (a copy would lose the update)");
    return static_cast<float*>(a.mutable_data());
}

// A read-only float32 input of n elements, C-contiguous.
const float* in_f32(const py::array& a, int64_t numel, const char* what) {
    if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) ||
        a.size() != numel)
        throw std::invalid_argument(std::string(what) + " must be a C-contiguous float32 array of " +
                                    std::to_string(numel) + " elements");
    return static_cast<const float*>(a.data());
}

// Bool [len(variants), numel]: element start+i is reset by variant j.
py::array_t<bool> subset_masks(uint64_t seed, uint64_t step, std::vector<uint32_t> variants,
                               int64_t start, int64_t numel, int threshold) {
    check_threshold(threshold);
    py::array_t<bool> out({static_cast<py::ssize_t>(variants.size()), static_cast<py::ssize_t>(numel)});
    bool* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        std::fill(o, o + variants.size() * numel, false);
        for_each_reset(seed, step, variants, start, numel, static_cast<uint8_t>(threshold),
                       [&](int64_t i, size_t j) { o[j * numel + i] = true; });
    }
    return out;
}

// "paper" family: score <- (score + term[k]) * 0.5 for each variant k resetting the element.
void accumulate_halving(py::array score, uint64_t seed, uint64_t step, int64_t start,
                        int threshold, std::vector<double> terms) {
    check_threshold(threshold);
    const int64_t n = score.size();
    float* s = inplace_f32(score, n, "score");
    const std::vector<float> t(terms.begin(), terms.end());
    py::gil_scoped_release release;
    for_each_reset(seed, step, first_variants(t.size()), start, n, static_cast<uint8_t>(threshold),
                   [&](int64_t i, size_t k) { s[i] = (s[i] + t[k]) * 0.5f; });
}

// "mean" family: damage_sum += damage[k], count += 1 for each variant k resetting the element.
void accumulate_sum_count(py::array damage_sum, py::array count, uint64_t seed, uint64_t step,
                          int64_t start, int threshold, std::vector<double> damages) {
    check_threshold(threshold);
    const int64_t n = damage_sum.size();
    float* d = inplace_f32(damage_sum, n, "damage_sum");
    float* c = inplace_f32(count, n, "count");
    const std::vector<float> dm(damages.begin(), damages.end());
    py::gil_scoped_release release;
    for_each_reset(seed, step, first_variants(dm.size()), start, n,
                   static_cast<uint8_t>(threshold), [&](int64_t i, size_t k) {
                       d[i] += dm[k];
                       c[i] += 1.0f;
                   });
}

// One training step's per-weight proxies (bingo.proxies) for elements [lo, hi), in place,
// one pass over memory: fisher <- decay * fisher + g^2, reset += |g (target - w)|, and
// with Movement, movement -= g w (a search may leave movement out: m is then unused).
// Restrict-qualified and simd so that it runs in vector lanes on every path (the serial
// branch of an `omp parallel for simd if` stayed scalar: 2 ns per element against 0.6).
template <bool Movement>
static inline void proxy_block(float* __restrict__ f, float* __restrict__ r,
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
static inline void movement_block(float* __restrict__ m, const float* __restrict__ g,
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
static void foreach_chunk(const char* name, const std::vector<int64_t>& sizes,
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

static inline float* f32(uintptr_t address) { return reinterpret_cast<float*>(address); }

// The proxies of one step over every target: per target six addresses (fisher, reset,
// movement written in place; grad, weight, target read), or five without movement.
template <bool Movement>
static void proxy_update_all(const std::vector<int64_t>& sizes,
                             const std::vector<uintptr_t>& addresses, float d) {
    constexpr int per = Movement ? 6 : 5, g = per - 3;  // g: where grad, weight, target start
    foreach_chunk("proxy_update", sizes, addresses, per,
                  [d](const uintptr_t* a, int64_t lo, int64_t hi) {
                      proxy_block<Movement>(f32(a[0]), f32(a[1]), Movement ? f32(a[2]) : nullptr,
                                            f32(a[g]), f32(a[g + 1]), f32(a[g + 2]), d, lo, hi);
                  });
}

void proxy_update(const std::vector<int64_t>& sizes, const std::vector<uintptr_t>& addresses,
                  double decay, bool movement) {
    const float d = static_cast<float>(decay);
    if (movement) proxy_update_all<true>(sizes, addresses, d);
    else proxy_update_all<false>(sizes, addresses, d);
}

// Movement alone over every target: three addresses per target (movement written in
// place; grad, weight read).
void movement_update(const std::vector<int64_t>& sizes,
                     const std::vector<uintptr_t>& addresses) {
    foreach_chunk("movement_update", sizes, addresses, 3,
                  [](const uintptr_t* a, int64_t lo, int64_t hi) {
                      movement_block(f32(a[0]), f32(a[1]), f32(a[2]), lo, hi);
                  });
}

// out[j, i] = initial[i] if variant j resets element start + i / unit else weight[i]:
// the K masked copies of one target (unit = row length at neuron granularity).
void masked_weights(const py::array& weight, const py::array& initial, py::array out,
                    uint64_t seed, uint64_t step, std::vector<uint32_t> variants, int64_t start,
                    int threshold, int64_t unit) {
    check_threshold(threshold);
    const int64_t n = weight.size(), V = static_cast<int64_t>(variants.size());
    if (unit < 1 || n % unit != 0) throw std::invalid_argument("unit must divide the weight's size");
    const float* w = in_f32(weight, n, "weight");
    const float* w0 = in_f32(initial, n, "initial");
    float* o = inplace_f32(out, n * V, "out");
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < V; ++j) std::copy(w, w + n, o + j * n);
    for_each_reset(seed, step, variants, start, n / unit, static_cast<uint8_t>(threshold),
                   [&](int64_t u, size_t j) {
                       std::copy(w0 + u * unit, w0 + (u + 1) * unit,
                                 o + static_cast<int64_t>(j) * n + u * unit);
                   });
}

// One reset weight of a (variant, row): its input feature and initial - current.
struct Reset {
    int64_t i;
    float d;
};

constexpr int64_t TILE = 64;  // batch columns held in registers (8 AVX2 vectors)
constexpr size_t PREFETCH = 6;  // resets ahead whose input row is prefetched

// dst[0..n) = src[0..n) + extra + sum over resets of d * x[i * TILE + 0..TILE): one row of
// one variant over one tile of the batch. x is that tile of the input, packed [in, TILE]
// (zero-padded past the batch) so that it is contiguous in cache. Portable version.
void correct_tile_scalar(float* dst, const float* src, const Reset* resets, size_t count,
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
void correct_tile_avx2(float* dst, const float* src, const Reset* resets, size_t count,
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

void correct_tile(float* dst, const float* src, const Reset* resets, size_t count,
                  const float* x, int64_t n, float extra) {
#if defined(__x86_64__)
    if (HAVE_AVX2_FMA) return correct_tile_avx2(dst, src, resets, count, x, n, extra);
#endif
    correct_tile_scalar(dst, src, resets, count, x, n, extra);
}

// A Linear layer whose input x is the same for every variant, feature-major:
//   out_t[j, o, :] = base_t[o, :] + sum over reset (o, i) of (initial - weight)[o, i] * x_t[i, :]
// (+ bias_delta[o] when a whole unit is reset, neuron granularity). base_t = (x W^T + b)^T is
// computed once by the caller, so the K variants cost one dense product plus (K * p) of one
// in sparse corrections instead of K dense products.
// Two passes: each (variant, row)'s list of resets from the subset stream, then the
// corrections tile by tile of the batch, with the tile of x packed contiguously.
void linear_shared_t(const py::array& x_t, const py::array& weight, const py::array& initial,
                     const py::array& base_t, const py::array& bias_delta, py::array out_t,
                     uint64_t seed, uint64_t step, std::vector<uint32_t> variants, int64_t start,
                     int threshold, bool neuron) {
    check_threshold(threshold);
    if (weight.ndim() != 2 || x_t.ndim() != 2 || x_t.shape(0) != weight.shape(1))
        throw std::invalid_argument("x_t must be [in, B] and weight [out, in]");
    const int64_t O = weight.shape(0), I = weight.shape(1), B = x_t.shape(1);
    const int64_t V = static_cast<int64_t>(variants.size());
    const float* x = in_f32(x_t, I * B, "x_t");
    const float* w = in_f32(weight, O * I, "weight");
    const float* w0 = in_f32(initial, O * I, "initial");
    const float* base = in_f32(base_t, O * B, "base_t");
    const float* db = bias_delta.size() ? in_f32(bias_delta, O, "bias_delta") : nullptr;
    float* o = inplace_f32(out_t, V * O * B, "out_t");
    const uint8_t th = static_cast<uint8_t>(threshold);
    py::gil_scoped_release release;
    std::vector<std::vector<Reset>> resets(V * O);
    std::vector<uint8_t> unit_reset(V * O, 0);
    if (neuron) {  // one decision per row (element start + r): reset rows take every input
        for_each_reset(seed, step, variants, start, O, th, [&](int64_t r, size_t j) {
            unit_reset[j * O + r] = 1;
            auto& list = resets[j * O + r];
            for (int64_t i = 0; i < I; ++i) list.push_back({i, w0[r * I + i] - w[r * I + i]});
        });
    } else {
#pragma omp parallel for schedule(static)
        for (int64_t jr = 0; jr < V * O; ++jr) {
            const int64_t r = jr % O;
            auto& list = resets[jr];
            list.reserve(static_cast<size_t>(I * threshold / 128 + 8));
            for_each_reset_in(seed, step, variants.data() + jr / O, 1, start + r * I, 0, I, th,
                              [&](int64_t i, size_t) {
                                  list.push_back({i, w0[r * I + i] - w[r * I + i]});
                              });
        }
    }
    const int64_t tiles = (B + TILE - 1) / TILE;
    std::vector<float> packed(static_cast<size_t>(tiles * I * TILE), 0.0f);  // [tiles, in, TILE]
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < I; ++i)
        for (int64_t b = 0; b < B; ++b) packed[((b / TILE) * I + i) * TILE + b % TILE] = x[i * B + b];
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t jr = 0; jr < V * O; ++jr) {  // rows outer: writes stream, measured faster
        for (int64_t t = 0; t < tiles; ++t) {
            const int64_t r = jr % O, b0 = t * TILE;
            const float extra = (db && unit_reset[jr]) ? db[r] : 0.0f;
            correct_tile(o + jr * B + b0, base + r * B + b0, resets[jr].data(),
                         resets[jr].size(), packed.data() + t * I * TILE, std::min(TILE, B - b0),
                         extra);
        }
    }
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
    m.doc() = "bingo C++ CPU backend (subset masks, masked weights, Linear correction, accumulation)";
    m.def("masked_weights", &masked_weights, py::arg("weight"), py::arg("initial"), py::arg("out"),
          py::arg("seed"), py::arg("step"), py::arg("variants"), py::arg("start"),
          py::arg("threshold"), py::arg("unit"));
    m.def("linear_shared_t", &linear_shared_t, py::arg("x_t"), py::arg("weight"),
          py::arg("initial"), py::arg("base_t"), py::arg("bias_delta"), py::arg("out_t"),
          py::arg("seed"), py::arg("step"), py::arg("variants"), py::arg("start"),
          py::arg("threshold"), py::arg("neuron"));
    m.def("subset_masks", &subset_masks, py::arg("seed"), py::arg("step"), py::arg("variants"),
          py::arg("start"), py::arg("numel"), py::arg("threshold"));
    m.def("accumulate_halving", &accumulate_halving, py::arg("score"), py::arg("seed"),
          py::arg("step"), py::arg("start"), py::arg("threshold"), py::arg("terms"));
    m.def("accumulate_sum_count", &accumulate_sum_count, py::arg("damage_sum"), py::arg("count"),
          py::arg("seed"), py::arg("step"), py::arg("start"), py::arg("threshold"),
          py::arg("damages"));
    m.def("proxy_update", &proxy_update, py::arg("sizes"), py::arg("addresses"),
          py::arg("decay"), py::arg("movement") = true);
    m.def("movement_update", &movement_update, py::arg("sizes"), py::arg("addresses"));
}
