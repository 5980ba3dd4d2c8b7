"""The benchmark matrix: runner and executors, typed run records, results as pandas, the leaderboard, comparisons."""
