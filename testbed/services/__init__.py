"""Real CDN service processes: origin, edge cache, mapping DNS, redirector, health checker.

Each is runnable alone: ``python -m testbed.services.NAME --config FILE``.
"""
