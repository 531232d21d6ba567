#!/usr/bin/env python3
"""Reference values for Pareto/NBD on its boundary s, beta -> infinity.

With s/beta = mu fixed, every customer has the same dropout rate mu. An
independent mpmath implementation (50 digits), written from the model and
not from src/pareto_nbd.c:

  likelihood  L = E_lambda[ lambda^x e^-(lambda+mu)T
                 + mu lambda^x (e^-(lambda+mu)t_x - e^-(lambda+mu)T)/(lambda+mu) ],
              lambda ~ Gamma(r, alpha), integrated numerically over lambda,
              and cross-checked against the closed form with the incomplete
              gamma function: L = G(r+x) alpha^r/G(r) [(alpha+T)^-(r+x) e^-mu T
              + mu e^(mu alpha) mu^(r+x-1) Gamma(1-r-x; mu(alpha+t_x), mu(alpha+T))];
  P(alive)    the first term over L;
  expected    P(alive) (r+x)/(alpha+T) (1 - e^-mu h)/mu (alive at T: lambda ~
              Gamma(r+x, alpha+T); the remaining lifetime is Exp(mu)).

The SQL functions are called with s = 1e12 and beta = 1e12/mu (mu <= 1) or
beta = 1e12 and s = 1e12 mu, as pareto_nbd_fit reports the limit; mu here is
s/beta of those doubles. Writes test/reference/pnbd_limit_reference.csv, read
by sql/btyd_models.sql. Rerun: python3 test/reference/pnbd_limit_reference.py

The limit's maximum-likelihood fit on a simulated shop (the expected values
of pareto_nbd_fit finding the limit itself) is pnbd_limit_fit_reference.py.
"""
import csv
import os

import mpmath as mp

mp.mp.dps = 50

PARAMS = {  # r, alpha, mu
    "cdnow_like": (0.553, 10.578, 0.05),
    "days": (1.2, 21.6, 0.01),
    "fast_dropout": (2.0, 0.5, 2.0),
    "small_r": (0.3, 3.0, 0.3),
}
CUSTOMERS = [
    (0, 0, 38.86), (0, 0, 0.5), (1, 1.71, 38.86), (2, 30.43, 38.86),
    (5, 20, 20), (7, 35.5, 36), (30, 12.25, 52), (200, 38, 39),
    (200, 10, 39), (12, 1e-3, 104), (3, 100, 700),
]
HORIZONS = [1, 39, 520]
SCALE = 1e12


def sql_params(r, al, mu):
    """The doubles passed to SQL (s, beta) and mu = s/beta from them."""
    if mu <= 1:
        s, be = SCALE, SCALE / mu
    else:
        s, be = SCALE * mu, SCALE
    return s, be, mp.mpf(s) / mp.mpf(be)


def parts_quad(x, tx, T, r, al, mu):
    """(first term, L) by integration over lambda ~ Gamma(r, alpha)."""
    x, tx, T, r, al = map(mp.mpf, (x, tx, T, r, al))
    if x == 0:
        tx = mp.mpf(0)
    # in u = log(lambda), split around the peaks of lambda^(r+x) e^-lambda(alpha+t),
    # each integrand scaled to about 1 at its largest split point (mp.quad's
    # tolerance is absolute)
    lgr = -mp.loggamma(r) + r * mp.log(al)

    def lterm1(u):
        return lgr + (r + x) * u - mp.exp(u) * (al + T) - mu * T

    def lterm2(u):
        l = mp.exp(u)
        return (lgr + (r + x) * u - l * (al + tx) - mu * tx + mp.log(mu) - mp.log(l + mu)
                + mp.log(-mp.expm1(-(l + mu) * (T - tx))))

    # ends where the integrands are below e^-120 of their peaks
    pts = set()
    for t in (tx, T):
        lm = mp.log((r + x) / (al + t))
        pts.update(lm + k for k in (-8, -4, -2, -1, 0, 1, 2, 4, 7))
        pts.add(lm - 120 / (r + x))
    pts = sorted(pts)

    def integral(lf):
        c = max(lf(u) for u in pts)
        return mp.exp(c) * mp.quad(lambda u: mp.exp(lf(u) - c), pts)

    a = integral(lterm1)
    b = integral(lterm2) if tx < T else mp.mpf(0)
    return a, a + b


def parts_closed(x, tx, T, r, al, mu):
    x, tx, T, r, al = map(mp.mpf, (x, tx, T, r, al))
    if x == 0:
        tx = mp.mpf(0)
    c = mp.gamma(r + x) * al**r / mp.gamma(r)
    a = c * (al + T)**(-(r + x)) * mp.exp(-mu * T)
    J = mp.exp(mu * al) * mu**(r + x - 1) * mp.gammainc(1 - r - x, mu * (al + tx), mu * (al + T))
    return a, a + c * mu * J


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pnbd_limit_reference.csv")
    rows = []
    for name, (r, al, mu0) in PARAMS.items():
        s, be, mu = sql_params(r, al, mu0)
        for (x, tx, T) in CUSTOMERS:
            a, L = parts_closed(x, tx, T, r, al, mu)
            aq, Lq = parts_quad(x, tx, T, r, al, mu)
            assert abs(Lq / L - 1) < mp.mpf(10)**-30, (name, x, tx, T, L, Lq)
            assert abs(aq / a - 1) < mp.mpf(10)**-30, (name, x, tx, T, a, aq)
            p = a / L
            vals = [("loglik", "", mp.log(L)), ("p_alive", "", p)]
            for h in HORIZONS:
                e = p * (r + x) / (al + T) * (1 - mp.exp(-mu * h)) / mu
                vals.append(("expected", h, e))
            for fn, h, v in vals:
                if v != 0 and abs(mp.log10(abs(v))) > 300:
                    continue  # not a double (P(alive) below 1e-300)
                rows.append([name, fn, h, x, tx, T, r, al, repr(s), repr(be), mp.nstr(v, 17)])
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["params", "fn", "horizon", "x", "t_x", "t", "r", "alpha", "s", "beta", "value"])
        w.writerows(rows)
    print(f"{len(rows)} values written to {out}")


if __name__ == "__main__":
    main()
