"""Benchmarks of xsvs-bluesky; run them all with ``python3 -m benchmarks``."""
