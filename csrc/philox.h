// The subset stream: Philox-4x32-10 as reset bitmasks (portable, AVX2 and AVX-512
// paths, bit-identical), and the loops that visit each variant's reset elements in order.
// Part of bingo's C++ CPU backend (csrc/bingo_cpu.cpp, one translation unit).
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace bingo_cpu {

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

inline void reset_bits_scalar(uint64_t seed, uint64_t step, uint32_t variant, uint64_t group0,
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

// The ten rounds on the counters (c0: the caller's per-lane call indices; variant and
// step broadcast), one Philox call per 32-bit lane of REG, with the ISA's MUL_HI_LO, XOR
// and SET1; leaves the four output words in c0..c3. A macro, because the AVX2 and
// AVX-512 paths each need their own target attribute.
#define BINGO_PHILOX_ROUNDS(REG, MUL_HI_LO, XOR, SET1)                                      \
    REG c1 = SET1(static_cast<int>(variant));                                               \
    REG c2 = SET1(static_cast<int>(static_cast<uint32_t>(step)));                           \
    REG c3 = SET1(static_cast<int>(static_cast<uint32_t>(step >> 32)));                     \
    {                                                                                       \
        const REG ma = SET1(static_cast<int>(ROUND_A)), mb = SET1(static_cast<int>(ROUND_B)); \
        uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);  \
        for (int r = 0; r < ROUNDS; ++r) {                                                  \
            REG hi0, lo0, hi2, lo2;                                                         \
            MUL_HI_LO(c0, ma, hi0, lo0);                                                    \
            MUL_HI_LO(c2, mb, hi2, lo2);                                                    \
            const REG n0 = XOR(XOR(hi2, c1), SET1(static_cast<int>(k0)));                    \
            const REG n2 = XOR(XOR(hi0, c3), SET1(static_cast<int>(k1)));                    \
            c1 = lo2;                                                                       \
            c3 = lo0;                                                                       \
            c0 = n0;                                                                        \
            c2 = n2;                                                                        \
            k0 += KEY_A;                                                                    \
            k1 += KEY_B;                                                                    \
        }                                                                                   \
    }

__attribute__((target("avx2")))
inline void reset_bits_avx2(uint64_t seed, uint64_t step, uint32_t variant, uint64_t group0,
                            uint8_t threshold, uint32_t bits[4]) {
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(group0))),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    BINGO_PHILOX_ROUNDS(__m256i, mul_hi_lo, _mm256_xor_si256, _mm256_set1_epi32)
    const __m256i t = _mm256_set1_epi8(static_cast<char>(threshold - 1));
    bits[0] = bytes_below(c0, t);
    bits[1] = bytes_below(c1, t);
    bits[2] = bytes_below(c2, t);
    bits[3] = bytes_below(c3, t);
}

// Two spans at once (2 * LANES calls, one per 32-bit lane of an AVX-512 register): bits
// of the span at group0 in bits[0..3], of the next span in bits[4..7]. (GCC 12 warns
// that its own avx512fintrin.h reads an uninitialized __Y: its bug 105593, silenced.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f,avx512bw")))
inline void mul_hi_lo_512(__m512i a, __m512i m, __m512i& hi, __m512i& lo) {
    const __m512i even = _mm512_mul_epu32(a, m);
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
    lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
    hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

__attribute__((target("avx512f,avx512bw")))
inline void reset_bits2_avx512(uint64_t seed, uint64_t step, uint32_t variant, uint64_t group0,
                               uint8_t threshold, uint32_t bits[8]) {
    __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(group0))),
                                  _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                                    13, 14, 15));
    BINGO_PHILOX_ROUNDS(__m512i, mul_hi_lo_512, _mm512_xor_si512, _mm512_set1_epi32)
    const __m512i t = _mm512_set1_epi8(static_cast<char>(threshold - 1));
    const __m512i words[4] = {c0, c1, c2, c3};
    for (int w = 0; w < 4; ++w) {  // bit 4 * lane + byte, lanes 0-7 low, 8-15 high
        const uint64_t below = _mm512_cmple_epu8_mask(words[w], t);
        bits[w] = static_cast<uint32_t>(below);
        bits[4 + w] = static_cast<uint32_t>(below >> 32);
    }
}
#pragma GCC diagnostic pop
#undef BINGO_PHILOX_ROUNDS

const bool HAVE_AVX2 = __builtin_cpu_supports("avx2");
const bool HAVE_AVX2_FMA = HAVE_AVX2 && __builtin_cpu_supports("fma");
const bool HAVE_AVX512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
const bool HAVE_AVX2 = false, HAVE_AVX512 = false;
#endif

// The Philox path in use: 2 = AVX-512 (two spans a call), 1 = AVX2, 0 = portable; the
// best the CPU has, or what set_philox_isa chose (the tests compare every path).
inline int philox_path = HAVE_AVX512 ? 2 : HAVE_AVX2 ? 1 : 0;

inline void reset_bits(uint64_t seed, uint64_t step, uint32_t variant, uint64_t group0,
                       uint8_t threshold, uint32_t bits[4]) {
#if defined(__x86_64__)
    if (philox_path >= 1) return reset_bits_avx2(seed, step, variant, group0, threshold, bits);
#endif
    reset_bits_scalar(seed, step, variant, group0, threshold, bits);
}

// The spans at group0 and group0 + LANES: bits[0..3] and bits[4..7].
inline void reset_bits2(uint64_t seed, uint64_t step, uint32_t variant, uint64_t group0,
                        uint8_t threshold, uint32_t bits[8]) {
#if defined(__x86_64__)
    if (philox_path == 2) return reset_bits2_avx512(seed, step, variant, group0, threshold, bits);
#endif
    reset_bits(seed, step, variant, group0, threshold, bits);
    reset_bits(seed, step, variant, group0 + LANES, threshold, bits + 4);
}

// Calls fn(e) for every element e in [e_lo, e_hi) that one span's bits (reset_bits at
// span start `base`) reset: by word, then by bit.
template <typename Fn>
inline void for_each_set(const uint32_t* bits, int64_t base, int64_t e_lo, int64_t e_hi,
                         Fn&& fn) {
    const bool whole = base >= e_lo && base + SPAN <= e_hi;
    for (int w = 0; w < 4; ++w)
        for (uint32_t m = bits[w]; m; m &= m - 1) {
            const int64_t e = base + span_element(w, __builtin_ctz(m));
            if (whole || (e >= e_lo && e < e_hi)) fn(e);
        }
}

// Calls fn(i, j) for every element start+i, i in [lo, hi), that variant variants[j]
// resets: per pair of spans, variant by variant, so each element sees its variants in
// order. Runs on the caller's thread.
template <typename Fn>
inline void for_each_reset_in(uint64_t seed, uint64_t step, const uint32_t* variants, size_t nv,
                              int64_t start, int64_t lo, int64_t hi, uint8_t threshold, Fn&& fn) {
    const int64_t e_lo = start + lo, e_hi = start + hi;
    uint32_t bits[8];
    for (int64_t base = (e_lo / SPAN) * SPAN; base < e_hi; base += 2 * SPAN) {
        const bool two = base + SPAN < e_hi;
        const uint64_t group0 = static_cast<uint64_t>(base / PER_CALL);
        for (size_t j = 0; j < nv; ++j) {
            if (two) reset_bits2(seed, step, variants[j], group0, threshold, bits);
            else reset_bits(seed, step, variants[j], group0, threshold, bits);
            auto emit = [&](int64_t e) { fn(e - start, j); };
            for_each_set(bits, base, e_lo, e_hi, emit);
            if (two) for_each_set(bits + 4, base + SPAN, e_lo, e_hi, emit);
        }
    }
}

// for_each_reset_in over elements start..start+numel-1, split across threads in pairs
// of whole spans (a thread never recomputes a call another one made, nor touches its
// elements).
template <typename Fn>
void for_each_reset(uint64_t seed, uint64_t step, const std::vector<uint32_t>& variants,
                    int64_t start, int64_t numel, uint8_t threshold, Fn&& fn) {
    if (numel <= 0) return;
    const int64_t first = start / SPAN, pairs = ((start + numel - 1) / SPAN - first) / 2 + 1;
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < pairs; ++q) {
        const int64_t s = first + 2 * q;
        const int64_t lo = std::max<int64_t>(s * SPAN, start) - start;
        const int64_t hi = std::min<int64_t>((s + 2) * SPAN, start + numel) - start;
        for_each_reset_in(seed, step, variants.data(), variants.size(), start, lo, hi, threshold,
                          fn);
    }
}

inline std::vector<uint32_t> first_variants(size_t K) {
    std::vector<uint32_t> v(K);
    for (size_t k = 0; k < K; ++k) v[k] = static_cast<uint32_t>(k);
    return v;
}

inline void check_threshold(int threshold) {
    if (threshold < 1 || threshold > 255) throw std::invalid_argument("threshold must be in [1, 255]");
}

}  // namespace bingo_cpu
