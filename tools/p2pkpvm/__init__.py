"""P2PKP VM harness, by layer; each subpackage imports only from the ones before it:

errors, paths -> kernel (pin, deps, kbuild, kernel choice) -> vm (kvm probe, vng argv, console,
one guest, crash parser) -> net (netns, topology, netem/impair) -> cluster (guests on a bridge,
attach server) -> scenario (test helpers, tool output reader) -> bench | plugin (pytest) -> cli.
tools/tests/test_layers.py enforces the order.
"""
