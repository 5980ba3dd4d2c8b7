"""Tables of the #30 measurements from the run records: mean ± sd over seeds, gains paired per seed (t-test)."""
import os
import sys
from pathlib import Path

import pandas as pd
from scipy import stats

from bench.matrix.results import load_results

Q = Path(os.environ.get("R", "/tmp/real-data"))


def records(folder: Path, **extra) -> pd.DataFrame:
    """The folder's ok runs (``load_results``), main score in % (PSNR as it is)."""
    df = load_results(folder)
    df = df[df.status == "ok"]
    value = df.main_value.where(df.main_value > 1.0, 100 * df.main_value)
    return df[["task", "init", "protocol", "seed", "wall_s"]].assign(value=value, **extra)


def summary(df: pd.DataFrame, keys: list[str], base_of) -> pd.DataFrame:
    out = []
    for key, g in df.groupby(keys):
        key = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        s = g.set_index("seed")["value"]
        row = {**key, "n": len(s), "mean": s.mean(), "sd": s.std(ddof=1)}
        base = base_of(df, key)
        if base is not None and key["init"] not in ("scratch", "random"):
            b = base.set_index("seed")["value"]
            d = (s - b).dropna()
            row.update(gain=d.mean(), gain_sd=d.std(ddof=1), p=stats.ttest_rel(s[d.index], b[d.index]).pvalue
                       if len(d) > 1 else float("nan"), per_seed=" ".join(f"{x:+.1f}" for x in d))
        out.append(row)
    return pd.DataFrame(out)


def base_same(df, key):
    rest = {k: v for k, v in key.items() if k != "init"}
    m = pd.Series(True, index=df.index)
    for k, v in rest.items():
        m &= df[k] == v
    b = df[m & df.init.isin(["scratch", "random"])]
    return b if len(b) else None


if __name__ == "__main__":
    pd.set_option("display.width", 250)
    for name in sys.argv[1:]:
        if name == "levels":
            df = pd.concat([records(Q / f"level{k}", level=k) for k in range(5) if (Q / f"level{k}").is_dir()])
            t = summary(df, ["level", "init", "task", "protocol"], base_same)
        else:
            df = records(Q / name)
            t = summary(df, ["task", "protocol", "init"], base_same)
        print(f"## {name}\n{t.round(3).to_string(index=False)}\n")
        t.to_csv(Q / f"table-{name}.csv", index=False)
