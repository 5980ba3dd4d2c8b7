"""What users run: the CLI, pre-training and fine-tuning engines, the matrix runner and the leaderboard.

``load_results`` and ``per_class`` (from :mod:`bench.matrix.results`) are the public way to read run records
into pandas.
"""

from bench.matrix.results import load_results, per_class

__all__ = ["load_results", "per_class"]
