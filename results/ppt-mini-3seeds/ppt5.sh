set -x
while pgrep -f ppt4.sh > /dev/null; do sleep 30; done
export PYTHONPATH=/work/meas
PB=/work/main/.venv/bin/ponderbench
cd /work/meas
date
$PB run --data /work/main/data/mini --results /work/meas-results/ppt-ctrl --tasks scannet-semseg --backbones spunet-mini --inits scratch --protocols finetune --seeds 0,1,2 --no-progress epochs=35
date
