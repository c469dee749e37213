"""Experiments: YAML specs plus runners that write raw data, plots and a report."""
