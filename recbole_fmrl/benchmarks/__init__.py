"""Efficiency benchmarks of fMRLRec: ``python -m benchmarks.run [--quick]`` (not tests)."""
