"""A deterministic procedural generator writing small datasets in each benchmark's real on-disk format."""
