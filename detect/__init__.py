"""Belegwacht: nightly anomaly detection for booking data."""

__version__ = "0.1.0"
