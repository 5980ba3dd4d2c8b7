#!/usr/bin/env bash
# Issue #30: does rendering pre-training help on real data? Every number of README's "On real data" section.
# 2 CPU cores; each job pinned to one (taskset), two side by side. Run from the repository root.
set -euo pipefail
R=${R:-/tmp/real-data}
SWEEPS=../shared/data/nuscenes-lidarseg-samples
PB=".venv/bin/ponderbench"
one() { taskset -c "$1" env OMP_NUM_THREADS=1 $PB "${@:2}"; }

# outdoor: the LiDAR-ray form of PonderV2's pretext on the 24 training sweeps, at 1x (240 steps), 10x and 20x
for n in 10:token-x1 100:token-x10 200:token-x20; do
  one 0 pretrain --preset outdoor-mini-camera --data $SWEEPS --out $R/${n#*:} --no-progress \
      epochs=${n%%:*} outdoor_rays=lidar lidar_rays=1024
  one 0 runs heldout $R/${n#*:}                      # picture: real vs rendered depth, before and after
done
INITS=scratch,$R/token-x1/backbone.pt,$R/token-x10/backbone.pt,$R/token-x20/backbone.pt
one 1 run --data ../shared/data --tasks 'nuscenes-lidarseg-samples*' --inits $INITS --seeds 0,1,2 --results $R/sweeps

# why: the probe of each level, a 10x lower backbone learning rate, what the frozen features encode
for k in 0 1 2 3 4; do
  one 1 run --data ../shared/data --tasks nuscenes-lidarseg-samples --inits scratch,$R/token-x20/backbone.pt \
      --protocols probe --seeds 0,1,2 --results $R/level$k semseg.level=$k
done
one 1 run --data ../shared/data --tasks nuscenes-lidarseg-samples --inits scratch,$R/token-x10/backbone.pt \
    --protocols finetune --seeds 0,1,2 --results $R/lr01 backbone_lr_scale=0.1
one 1 features --task nuscenes-lidarseg-samples --data ../shared/data --inits random,${INITS#scratch,}

# indoor: indoor-mode pre-training on the 80 training frames of the real 7-Scenes scene, then its novel views and
# surface from that init, from the generated rooms' mini pre-training (ponder) and from scratch
one 1 pretrain --preset indoor-mini --data ../shared/data/7scenes-rgbd --out $R/indoor-7scenes --no-progress \
    epochs=1 steps_per_epoch=300
one 1 runs heldout $R/indoor-7scenes
one 1 run --data data/mini,../shared/data --tasks nvs-7scenes,recon-7scenes --inits scratch,ponder,$R/indoor-7scenes/backbone.pt \
    --seeds 0,1,2 --protocols finetune --results $R/lowlevel

# the tables: mean ± sd over seeds, gains paired per seed with a t-test
R=$R .venv/bin/python results/real-data/tables.py sweeps levels lr01
R=$R .venv/bin/python results/real-data/lowlevel_tables.py
