// bingo's C++ CPU backend: subset masks and fused significance accumulation.
//
// Mirrors bingo/reference.py bit for bit: the same Philox-4x32-10 stream
// (bingo/subsets.py documents it), and the same float32 update order (variant by
// variant). Arrays arrive through the buffer protocol (numpy views of torch
// tensors), so the build needs only pybind11, never torch.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <stdexcept>
#include <vector>

namespace py = pybind11;

namespace {

constexpr uint32_t ROUND_A = 0xD2511F53u, ROUND_B = 0xCD9E8D57u;
constexpr uint32_t KEY_A = 0x9E3779B9u, KEY_B = 0xBB67AE85u;
constexpr int ROUNDS = 10;
constexpr int64_t PER_CALL = 16;  // one byte decision per element, 16 per Philox call

// The 16 draw bytes of Philox call `group` for (seed, step, variant).
inline void philox_bytes(uint64_t seed, uint64_t step, uint32_t variant, uint64_t group,
                         uint8_t out[PER_CALL]) {
    uint32_t c0 = static_cast<uint32_t>(group), c1 = variant;
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
        for (int b = 0; b < 4; ++b) out[4 * w + b] = static_cast<uint8_t>(words[w] >> (8 * b));
}

// Calls fn(element i in [0, numel), variant index j, selected) for every decision of
// elements start..start+numel-1, group by group; groups are split across threads.
template <typename Fn>
void for_each_group(uint64_t seed, uint64_t step, const std::vector<uint32_t>& variants,
                    int64_t start, int64_t numel, Fn&& fn) {
    if (numel <= 0) return;
    const int64_t first = start / PER_CALL, last = (start + numel - 1) / PER_CALL;
#pragma omp parallel for schedule(static)
    for (int64_t g = first; g <= last; ++g) {
        const int64_t lo = std::max<int64_t>(g * PER_CALL, start) - start;
        const int64_t hi = std::min<int64_t>((g + 1) * PER_CALL, start + numel) - start;
        uint8_t bytes[PER_CALL];
        for (size_t j = 0; j < variants.size(); ++j) {
            philox_bytes(seed, step, variants[j], static_cast<uint64_t>(g), bytes);
            for (int64_t i = lo; i < hi; ++i) fn(i, j, bytes[(start + i) - g * PER_CALL]);
        }
    }
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

// Bool [len(variants), numel]: element start+i is reset by variant j.
py::array_t<bool> subset_masks(uint64_t seed, uint64_t step, std::vector<uint32_t> variants,
                               int64_t start, int64_t numel, int threshold) {
    check_threshold(threshold);
    py::array_t<bool> out({static_cast<py::ssize_t>(variants.size()), static_cast<py::ssize_t>(numel)});
    bool* o = out.mutable_data();
    const uint8_t t = static_cast<uint8_t>(threshold);
    {
        py::gil_scoped_release release;
        for_each_group(seed, step, variants, start, numel,
                       [&](int64_t i, size_t j, uint8_t b) { o[j * numel + i] = b < t; });
    }
    return out;
}

// Calls fn(i, k) for each variant k = 0..K-1 (in that order per element) that resets
// element start+i of an n-element state; the GIL is released meanwhile.
template <typename Fn>
void for_each_reset(uint64_t seed, uint64_t step, int64_t start, int64_t n, int threshold,
                    size_t K, Fn&& fn) {
    check_threshold(threshold);
    std::vector<uint32_t> variants(K);
    for (size_t k = 0; k < K; ++k) variants[k] = static_cast<uint32_t>(k);
    const uint8_t th = static_cast<uint8_t>(threshold);
    py::gil_scoped_release release;
    for_each_group(seed, step, variants, start, n, [&](int64_t i, size_t k, uint8_t b) {
        if (b < th) fn(i, k);
    });
}

// "paper" family: score <- (score + term[k]) * 0.5 for each variant k resetting the element.
void accumulate_halving(py::array score, uint64_t seed, uint64_t step, int64_t start,
                        int threshold, std::vector<double> terms) {
    const int64_t n = score.size();
    float* s = inplace_f32(score, n, "score");
    const std::vector<float> t(terms.begin(), terms.end());
    for_each_reset(seed, step, start, n, threshold, t.size(),
                   [&](int64_t i, size_t k) { s[i] = (s[i] + t[k]) * 0.5f; });
}

// "mean" family: damage_sum += damage[k], count += 1 for each variant k resetting the element.
void accumulate_sum_count(py::array damage_sum, py::array count, uint64_t seed, uint64_t step,
                          int64_t start, int threshold, std::vector<double> damages) {
    const int64_t n = damage_sum.size();
    float* d = inplace_f32(damage_sum, n, "damage_sum");
    float* c = inplace_f32(count, n, "count");
    const std::vector<float> dm(damages.begin(), damages.end());
    for_each_reset(seed, step, start, n, threshold, dm.size(), [&](int64_t i, size_t k) {
        d[i] += dm[k];
        c[i] += 1.0f;
    });
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
    m.doc() = "bingo C++ CPU backend (subset masks, significance accumulation)";
    m.def("subset_masks", &subset_masks, py::arg("seed"), py::arg("step"), py::arg("variants"),
          py::arg("start"), py::arg("numel"), py::arg("threshold"));
    m.def("accumulate_halving", &accumulate_halving, py::arg("score"), py::arg("seed"),
          py::arg("step"), py::arg("start"), py::arg("threshold"), py::arg("terms"));
    m.def("accumulate_sum_count", &accumulate_sum_count, py::arg("damage_sum"), py::arg("count"),
          py::arg("seed"), py::arg("step"), py::arg("start"), py::arg("threshold"),
          py::arg("damages"));
}
