#!/usr/bin/env python3
"""Simulate N BG/NBD customers with fractional-day times (numpy, seeded).

  python3 test/bench/btyd_simulate.py N OUT.csv

Writes x,t_x,t rows (days, 6 decimals: almost every row is distinct, so
nothing can be compressed). r = 0.25, alpha = 28 days, a = 0.8, b = 2.5;
first purchases spread uniformly over two years. Used by bench_btyd.sh.
"""
import sys

import numpy as np

n, out = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(2501)
r, alpha, a, b = 0.25, 28.0, 0.8, 2.5
lam = rng.gamma(r, 1 / alpha, n)
p = rng.beta(a, b, n)
T = rng.uniform(1, 730, n)
x = np.zeros(n, int)
tx = np.zeros(n)
now = np.zeros(n)
alive = np.ones(n, bool)
while alive.any():
    idx = np.nonzero(alive)[0]
    now[idx] += rng.exponential(1 / lam[idx])
    over = now[idx] > T[idx]
    alive[idx[over]] = False
    idx = idx[~over]
    x[idx] += 1
    tx[idx] = now[idx]
    alive[idx[rng.random(idx.size) < p[idx]]] = False
np.savetxt(out, np.column_stack([x, tx, T]), fmt=["%d", "%.6f", "%.6f"], delimiter=",")
