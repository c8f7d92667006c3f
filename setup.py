"""Build script: pure-Python install always works; compiled backends are added when possible.

The extension build (CPU always when a C++ compiler exists, CUDA when torch has CUDA) is
issue #5's work and plugs in here through build_config.py.
"""
from setuptools import setup

setup()
