"""VM layer: KVM probe, vng command line, serial console, one guest, kernel crash parser."""
