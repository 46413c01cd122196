"""Builds the optional C++ CPU backend (bingo._cpu). Metadata lives in pyproject.toml.

The build needs only setuptools and pybind11 (never torch). Without a working C++
compiler the extension is skipped and bingo runs on the PyTorch reference.
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

cpu = Pybind11Extension(
    "bingo._cpu", ["csrc/bingo_cpu.cpp"], cxx_std=17,  # one translation unit; its headers:
    depends=[f"csrc/{h}.h" for h in ("arrays", "linear", "philox", "proxies")],
    extra_compile_args=["-O3", "-fopenmp"], extra_link_args=["-fopenmp"],
)
cpu.optional = True  # a failed compile warns and leaves the reference backend in charge

setup(ext_modules=[cpu], cmdclass={"build_ext": build_ext})
