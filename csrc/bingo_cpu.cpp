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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <stdexcept>
#include <vector>

#include "arrays.h"
#include "linear.h"
#include "philox.h"
#include "proxies.h"

namespace py = pybind11;

namespace bingo_cpu {

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

}  // namespace bingo_cpu

using namespace bingo_cpu;

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
    m.def("philox_isa", []() { return std::string(philox_path == 2 ? "avx512" : philox_path == 1 ? "avx2" : "portable"); },
          "the Philox path in use: avx512, avx2 or portable");
    m.def("philox_isas", []() {
        std::vector<std::string> out{"portable"};
        if (HAVE_AVX2) out.push_back("avx2");
        if (HAVE_AVX512) out.push_back("avx512");
        return out;
    }, "the Philox paths this CPU can run");
    m.def("set_philox_isa", [](const std::string& name) {
        const int path = name == "avx512" ? 2 : name == "avx2" ? 1 : name == "portable" ? 0 : -1;
        if (path < 0 || (path == 2 && !HAVE_AVX512) || (path == 1 && !HAVE_AVX2))
            throw std::invalid_argument("this CPU cannot run the Philox path '" + name + "'");
        philox_path = path;
    }, py::arg("name"), "choose the Philox path (tests compare every one the CPU has)");
    m.def("proxy_update", &proxy_update, py::arg("sizes"), py::arg("addresses"),
          py::arg("decay"), py::arg("movement") = true);
    m.def("movement_update", &movement_update, py::arg("sizes"), py::arg("addresses"));
}
