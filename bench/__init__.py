"""Benchmarks: tables with ratios against the peer measured in the same run."""
