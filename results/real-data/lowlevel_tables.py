"""nvs-7scenes / recon-7scenes: mean ± sd over seeds per init, and paired differences against scratch."""
import os
from pathlib import Path

import pandas as pd
from scipy import stats

from bench.matrix.results import load_results

results = Path(os.environ.get("R", "/tmp/real-data")) / "lowlevel"
cols = {"nvs-7scenes": ["PSNR", "SSIM", "AbsRel", "delta1"],
        "recon-7scenes": ["fscore", "precision", "recall", "accuracy", "completeness"]}
runs = load_results(results)
df = runs[(runs.status == "ok") & runs.task.isin(list(cols))]
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
t.to_csv(results / "table-lowlevel.csv", index=False)
