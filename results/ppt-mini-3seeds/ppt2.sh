set -x
export PYTHONPATH=/work/meas
PB=/work/main/.venv/bin/ponderbench
cd /work/meas
date
$PB run --data /work/main/data/mini --results /work/meas-results/ppt-multi --tasks scannet-semseg --backbones spunet-v1m3-mini --inits scratch,ponder --protocols finetune --seeds 0,1,2 --no-progress semseg.ppt=True semseg.datasets=structured3d:4,scannet:2,s3dis:1
date
$PB run --data /work/main/data/mini --results /work/meas-results/ppt-multi --tasks scannet200-semseg --backbones spunet-v1m3-mini --inits scratch,ponder --protocols finetune --seeds 0,1,2 --no-progress
date
