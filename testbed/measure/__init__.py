"""Measurement: Scapy probes, protocol layers, packet capture."""
