"""Test support shared by the test tiers (on pytest's pythonpath; not shipped in the product)."""
