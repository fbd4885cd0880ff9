"""Measurements: `make bench` (P2PKP against baselines) and `lossbench`."""
