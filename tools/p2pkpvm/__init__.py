"""P2PKP VM harness: pinned kernel, KVM probe, guests, clusters, crash detection."""
