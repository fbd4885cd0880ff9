"""Network layer: private namespace with bridge and taps, topologies, link impairment."""
