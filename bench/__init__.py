"""Benchmarks: speed, memory and detection quality (run with ``python -m bench``)."""
