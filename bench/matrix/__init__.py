"""The benchmark matrix: runner and executors, typed run records, the leaderboard."""
