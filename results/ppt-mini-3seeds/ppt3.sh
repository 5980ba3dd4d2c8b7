set -x
export PYTHONPATH=/work/meas
PB=/work/main/.venv/bin/ponderbench
cd /work/meas
PPT="semseg.ppt=True semseg.datasets=structured3d:4,scannet:2,s3dis:1"
date
$PB run --data /work/main/data/mini --results /work/meas-results/ppt-multi --tasks s3dis-area5-semseg --backbones spunet-v1m3-mini --inits scratch --protocols finetune --seeds 1 --no-progress $PPT
date
$PB run --data /work/main/data/mini --results /work/meas-results/ppt-multi --tasks scannet-semseg --backbones spunet-v1m3-mini --inits scratch,ponder --protocols finetune --seeds 0,1,2 --no-progress $PPT
date
