"""What users run: the CLI, pre-training and fine-tuning engines, the matrix runner and the leaderboard."""
