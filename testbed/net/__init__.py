"""Emulation: topology specs, the spec -> Mininet builder, link delay (netem or relay), cleanup."""
