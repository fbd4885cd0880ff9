"""Scenario layer: what VM tests share (tool paths, tool output, receivers, ports, deadlines)."""
