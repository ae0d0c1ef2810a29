"""Benchmarks of the CRM (``make bench``): each of our figures beside the bare limit it stands on.

Entry point :mod:`bench.run`; results in ``bench/RESULTS.md``. Benchmarks are never tests: nothing here
asserts a timing.
"""
