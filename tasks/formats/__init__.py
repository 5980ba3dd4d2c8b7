"""One module per on-disk format; each reads the real layout and writes it (for the generator)."""
