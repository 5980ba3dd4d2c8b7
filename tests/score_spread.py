"""Measure the spread of the learned scores that tests assert, over seeds and thread counts, before setting a bar.

    python -m tests.score_spread rooms --seeds 0,1,2,3,4 --threads 1,2
    python -m tests.score_spread sweeps --seeds 0,1,2 --threads 1   # needs ../shared/data

Prints one line per (seed, threads) and the minimum; each fit runs in a fresh process (the thread count is
fixed before torch starts any pool).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fit(case: str, seed: int) -> float:
    from tests.test_train_equals_eval import fit_generated_rooms, fit_real_sweeps

    result = fit_generated_rooms(seed) if case == "rooms" else fit_real_sweeps(REPO.parent / "shared" / "data", seed)
    return float(result.scores["allAcc"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=("rooms", "sweeps"))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--one", nargs=2, type=int, metavar=("SEED", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(args.one[1])
        print(json.dumps({"allAcc": fit(args.case, args.one[0])}))
        return
    scores = []
    for threads in (int(t) for t in args.threads.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            done = subprocess.run([sys.executable, "-m", "tests.score_spread", args.case, "--one", str(seed),
                                   str(threads)], cwd=REPO, env=env, capture_output=True, text=True, check=True)
            score = json.loads(done.stdout.strip().splitlines()[-1])["allAcc"]
            scores.append(score)
            print(f"{args.case} seed {seed} threads {threads}: allAcc {score:.4f}", flush=True)
    print(f"min {min(scores):.4f} max {max(scores):.4f} over {len(scores)} fits")


if __name__ == "__main__":
    main()
