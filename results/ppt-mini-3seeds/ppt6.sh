set -x
while pgrep -f "ppt[45].sh" > /dev/null; do sleep 30; done
export PYTHONPATH=/work/meas
PB=/work/main/.venv/bin/ponderbench
cd /work/meas
date
$PB run --data /work/main/data/mini --results /work/meas-results/ppt-ctrl --tasks scannet-semseg --backbones spunet-v1m3-mini --inits scratch --protocols finetune --seeds 0,1,2 --no-progress
date
$PB run --data /work/main/data/mini --results /work/meas-results/ppt-ctrl-head --tasks scannet-semseg --backbones spunet-v1m3-mini --inits scratch --protocols finetune --seeds 0,1,2 --no-progress semseg.ppt=True
date
