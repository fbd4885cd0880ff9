"""Guest-side payloads: stdlib-only programs that run inside the guests (python3 of the host)."""
