"""Kernel layer: the pin, `make deps`, the debug-kernel build, which kernel a cluster boots."""
