# Metadata lives in pyproject.toml; this file only declares the cffi build.
from setuptools import setup

setup(
    cffi_modules=[
        "ws/csrc/build_speedups.py:ffibuilder",
        "http/csrc/build_head.py:ffibuilder",
        "reactor/csrc/build_io.py:ffibuilder",
    ]
)
