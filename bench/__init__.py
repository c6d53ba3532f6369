"""Benchmarks: one script per op or scenario over named production shapes (see README.md).

A package only so that the scripts and tests can import the shared harness as ``bench.common``;
it is not installed with ltxengine.
"""
