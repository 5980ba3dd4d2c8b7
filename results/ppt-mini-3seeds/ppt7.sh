set -x
while pgrep -f "ppt[456].sh" > /dev/null; do sleep 30; done
export PYTHONPATH=/work/meas2
PB=/work/main/.venv/bin/ponderbench
cd /work/meas2
date
$PB run --data /work/main/data/mini --results /work/meas-results/ppt-base2 --tasks scannet-semseg,s3dis-area5-semseg,scannet200-semseg --backbones spunet-mini --inits ponder --protocols finetune --seeds 0,1,2 --no-progress
date
