"""Benchmarks of athens-trio against references measured in the same run.

``python -m bench <scenario|all> [--quick]``: see ``bench/README.md`` for the
scenarios, what each ratio means and how to rerun.
"""
