"""cdnlab: a Mininet testbed in which a whole Content Delivery Network runs for real on one machine."""

__version__ = "0.1.0"
