"""Performance tooling: the eager PonderV2-style baseline, the GPU check, the backbone cost probe (imported by the
benchmarks and by ``ponderbench compare``)."""
