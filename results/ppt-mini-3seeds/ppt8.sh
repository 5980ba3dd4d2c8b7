set -x
export PYTHONPATH=/work/meas3
PB=/work/main/.venv/bin/ponderbench
cd /work/meas3
date
$PB data synth --suite mini --root /work/data-ppt --datasets scannet,s3dis,structured3d
date
$PB run --data /work/data-ppt --results /work/meas-results/ppt-full --tasks scannet-semseg --backbones spunet-v1m3-mini --inits ponder --protocols finetune --seeds 0,1,2 --no-progress semseg.ppt=True semseg.datasets=structured3d:4,scannet:2,s3dis:1
date
