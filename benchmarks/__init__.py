"""Benchmarks run by ``cdnlab bench NAME --json``; each prints figures and ends with one JSON line."""
