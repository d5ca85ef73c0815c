"""Efficiency benchmarks of fMRLRec: ``python -m recbole_fmrl.benchmarks.run [--quick]`` (not tests)."""
