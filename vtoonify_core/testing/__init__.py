"""Test material made here, never downloaded: stand-in weights in the exact official layout and
synthetic clips. Tests and benchmarks use it; nothing else in the package does."""
