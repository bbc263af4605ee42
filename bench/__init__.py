"""Benchmarks of athens-trio against references measured in the same run."""
