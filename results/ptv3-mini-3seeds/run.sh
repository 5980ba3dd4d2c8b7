set -x
export PYTHONPATH=/work/meas4
cd /work/meas4
date
/work/main/.venv/bin/ponderbench compare ptv3-mini --against spunet-mini --data /work/main/data/mini --results /work/meas-results/ptv3-cmp --tasks scannet-semseg,s3dis-area5-semseg,semantickitti-semseg --inits scratch,ponder --protocols finetune,probe --seeds 0,1,2 --no-progress
date
