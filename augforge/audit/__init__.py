"""Data audits: near-duplicates and train/test leakage, label issues and outliers (``augforge audit``)."""
