"""What a benchmark is and the data it reads: on-disk formats, the mini-dataset generator, transforms."""
