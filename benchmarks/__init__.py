"""Benchmarks (performance targets live here, not in timed tests).

This file makes ``benchmarks`` a regular package so that ``python -m benchmarks.<name>`` resolves to this folder
rather than to an unrelated top-level ``benchmarks`` package some dependency installs into site-packages.
"""
