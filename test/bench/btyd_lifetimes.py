#!/usr/bin/env python3
"""Time lifetimes' fitters on a CSV of x,t_x,t rows (bench_btyd.sh).

  python3 test/bench/btyd_lifetimes.py IN.csv BetaGeoFitter [runs]

Prints the median wall time of `runs` fits (default 3) and the last fit's
parameters. Needs lifetimes and autograd on PYTHONPATH (bench_btyd.sh sets it).
"""
import statistics
import sys
import time

import pandas as pd
import lifetimes

d = pd.read_csv(sys.argv[1], header=None, names=["x", "t_x", "t"])
fitter = getattr(lifetimes, sys.argv[2])
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    f = fitter().fit(d["x"], d["t_x"], d["t"])
    times.append(time.perf_counter() - t0)
params = " ".join(f"{k}={v:.4f}" for k, v in f.params_.items())
print(f"{statistics.median(times):.3f} {params}")
