// Arrays arriving through the buffer protocol: refuse what pybind11 would have to copy.
// Part of bingo's C++ CPU backend (csrc/bingo_cpu.cpp, one translation unit).
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace py = pybind11;

namespace bingo_cpu {

// The float32 state array updated in place: refuse anything pybind11 would have to copy.
inline float* inplace_f32(py::array& a, int64_t numel, const char* what) {
    if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) ||
        !a.writeable() || a.size() != numel)
        throw std::invalid_argument(std::string(what) +
                                    " must be a writeable C-contiguous float32 array of the "
                                    "state's size (a copy would lose the update)");
    return static_cast<float*>(a.mutable_data());
}

// A read-only float32 input of n elements, C-contiguous.
inline const float* in_f32(const py::array& a, int64_t numel, const char* what) {
    if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) ||
        a.size() != numel)
        throw std::invalid_argument(std::string(what) + " must be a C-contiguous float32 array of " +
                                    std::to_string(numel) + " elements");
    return static_cast<const float*>(a.data());
}

}  // namespace bingo_cpu
