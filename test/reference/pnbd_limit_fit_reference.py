#!/usr/bin/env python3
"""Maximum-likelihood fit of Pareto/NBD's boundary limit on a simulated shop.

The shop: 1,000 customers simulated from the limit model itself (purchase
rates lambda ~ Gamma(r = 0.8, rate alpha = 20 days), exponential lifetimes with
one rate mu = 0.01 per day for everyone, observed for T = 30..730 whole days,
purchase times in days rounded to 0.01), Python's random.Random(10). Written
to test/data/pnbd_limit/customers.csv (x, t_x, t), read by sql/btyd_models.sql.

The fit, independent of src/pareto_nbd.c: the limit's likelihood per
customer by the closed form with the incomplete gamma function (as in
pnbd_limit_reference.py, mpmath, 40 digits)
  L = G(r+x) alpha^r/G(r) [(alpha+T)^-(r+x) e^-mu T
      + mu e^(mu alpha) mu^(r+x-1) Gamma(1-r-x; mu(alpha+t_x), mu(alpha+T))],
summed over the distinct (x, t_x, T) with their counts, maximised by Newton's
method in (log r, log alpha, log mu) with central-difference gradient and
Hessian (step 1e-12 at 40 digits), from the simulation's true values, until
the gradient is below 1e-15.

That this maximum is the maximum of the four-parameter Pareto/NBD model (on
its boundary s, beta -> infinity): with mu ~ Gamma(s, rate s/mu) (mean mu,
variance mu^2 kappa, kappa = 1/s), E[L(mu')] = L(mu) + mu^2 kappa L''(mu)/2 +
O(kappa^2), so d loglik/d kappa at kappa = 0 is sum mu^2 L''(mu)/(2 L(mu));
it is printed and must be negative (moving off the boundary, into finite
s, beta, lowers the likelihood), and the Hessian in the three limit
parameters is negative definite.

Prints the estimates; they are copied into sql/btyd_models.sql's expected
values. Rerun: python3 test/reference/pnbd_limit_fit_reference.py
(a few minutes).
"""
import csv
import os
import random
from collections import Counter

import mpmath as mp

mp.mp.dps = 40
SEED, N, R, ALPHA, MU = 10, 1000, 0.8, 20.0, 0.01
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "pnbd_limit", "customers.csv")


def simulate():
    rng = random.Random(SEED)
    out = []
    for _ in range(N):
        T = rng.randint(30, 730)
        lam = rng.gammavariate(R, 1.0 / ALPHA)
        life = rng.expovariate(MU)
        end = min(T, life)
        x, tx, at = 0, 0.0, 0.0
        while True:
            at += rng.expovariate(lam)
            if at > end:
                break
            x += 1
            tx = at
        out.append((x, min(round(tx, 2), T) if x else 0.0, T))
    return out


def lik(x, tx, T, r, al, mu):
    """The limit's likelihood of one customer (closed form, see above)."""
    c = mp.exp(mp.loggamma(r + x) - mp.loggamma(r) + r * mp.log(al))
    a = (al + T)**(-(r + x)) * mp.exp(-mu * T)
    if tx < T:
        J = mp.exp(mu * al) * mu**(r + x - 1) * mp.gammainc(1 - r - x, mu * (al + tx), mu * (al + T))
    else:
        J = 0
    return c * (a + mu * J)


def loglik(cells, th):
    r, al, mu = (mp.exp(v) for v in th)
    return mp.fsum(w * mp.log(lik(x, tx, T, r, al, mu)) for (x, tx, T), w in cells.items())


def newton(cells, th):
    h = mp.mpf(10)**-12
    for it in range(30):
        f0 = loglik(cells, th)
        fp, fm, g = [], [], []
        for i in range(3):
            e = [h if j == i else 0 for j in range(3)]
            fp.append(loglik(cells, [th[j] + e[j] for j in range(3)]))
            fm.append(loglik(cells, [th[j] - e[j] for j in range(3)]))
            g.append((fp[i] - fm[i]) / (2 * h))
        H = mp.matrix(3, 3)
        for i in range(3):
            H[i, i] = (fp[i] - 2 * f0 + fm[i]) / h**2
            for j in range(i):
                def f(si, sj):
                    return loglik(cells, [th[k] + (si * h if k == i else sj * h if k == j else 0)
                                          for k in range(3)])
                H[i, j] = H[j, i] = (f(1, 1) - f(1, -1) - f(-1, 1) + f(-1, -1)) / (4 * h * h)
        gmax = max(abs(v) for v in g)
        print(f"iteration {it}: loglik {mp.nstr(f0, 20)}, max |gradient| {mp.nstr(gmax, 3)}", flush=True)
        if gmax < mp.mpf(10)**-15:
            return th, f0, H
        step = mp.lu_solve(H, mp.matrix(g))
        th = [th[i] - step[i] for i in range(3)]
    raise RuntimeError("Newton did not converge")


def main():
    rows = simulate()
    os.makedirs(os.path.dirname(DATA), exist_ok=True)
    with open(DATA, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x", "t_x", "t"])
        w.writerows(rows)
    cells = Counter((x, mp.mpf(tx), mp.mpf(T)) for x, tx, T in rows)  # the exact doubles
    th, ll, H = newton(cells, [mp.log(R), mp.log(ALPHA), mp.log(MU)])
    r, al, mu = (mp.exp(v) for v in th)
    eig = mp.eigsy(H)[0]
    dk = mp.fsum(w * mu**2 * mp.diff(lambda m: lik(x, tx, T, r, al, m), mu, 2)
                 / (2 * lik(x, tx, T, r, al, mu)) for (x, tx, T), w in cells.items())
    print(f"customers {len(rows)}, repeat buyers {sum(1 for x, _, _ in rows if x > 0)}, cells {len(cells)}")
    print(f"r {mp.nstr(r, 15)}\nalpha {mp.nstr(al, 15)}\nmu {mp.nstr(mu, 15)}\nloglik {mp.nstr(ll, 15)}")
    print(f"Hessian eigenvalues (log r, log alpha, log mu): {[mp.nstr(e, 6) for e in eig]}")
    print(f"d loglik / d kappa at kappa = 0: {mp.nstr(dk, 6)}")
    assert max(eig) < 0 and dk < 0


if __name__ == "__main__":
    main()
