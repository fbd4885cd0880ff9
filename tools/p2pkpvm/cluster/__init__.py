"""Cluster layer: the guests of a topology on one bridge; the attach server (`vm-up`)."""
