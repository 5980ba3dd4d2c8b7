"""Performance tooling shared by the benchmarks and the GPU check: the eager PonderV2-style baseline, the GPU check."""
