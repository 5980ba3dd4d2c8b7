"""nvs-7scenes / recon-7scenes: mean ± sd over seeds per init, and paired differences against scratch."""
import json
import os
from pathlib import Path

import pandas as pd
from scipy import stats

root = Path(os.environ.get("R", "/tmp/real-data")) / "lowlevel" / "runs" / "records"
cols = {"nvs-7scenes@1": ["PSNR", "SSIM", "AbsRel", "delta1"],
        "recon-7scenes@2": ["fscore", "precision", "recall", "accuracy", "completeness"]}
rows = []
for task, keys in cols.items():
    for f in sorted((root / task / "spunet-mini").glob("*/full/seed*.json")):
        r = json.loads(f.read_text())
        if r["status"] == "ok":
            rows.append({"task": task, "init": r["init"], "seed": r["seed"], **{k: r["metrics"][k] for k in keys}})
df = pd.DataFrame(rows)
out = []
for (task, init), g in df.groupby(["task", "init"]):
    g = g.set_index("seed")
    base = df[(df.task == task) & (df.init == "scratch")].set_index("seed")
    for k in cols[task]:
        s = g[k]
        row = {"task": task, "init": init, "metric": k, "n": len(s), "mean": s.mean(), "sd": s.std(ddof=1)}
        if init != "scratch":
            d = (s - base[k]).dropna()
            row.update(diff=d.mean(), diff_sd=d.std(ddof=1),
                       p=stats.ttest_rel(s[d.index], base[k][d.index]).pvalue if len(d) > 1 else float("nan"))
        out.append(row)
t = pd.DataFrame(out)
pd.set_option("display.width", 200)
print(t.round(4).to_string(index=False))
t.to_csv(root.parents[1] / "table-lowlevel.csv", index=False)
