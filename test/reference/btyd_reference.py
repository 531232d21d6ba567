#!/usr/bin/env python3
"""Reference values for the per-customer MBG/NBD and Pareto/NBD functions.

An independent implementation in mpmath (50 significant digits) of the
published formulas, written from the papers and not from src/*.c:

  MBG/NBD    Batislam, Denizel & Filiztekin (2007), IJRM 24(3): likelihood,
             P(alive) and the conditional expectation with its 2F1.
  Pareto/NBD Fader & Hardie (2005), "A Note on Deriving the Pareto/NBD Model
             and Related Expressions" (brucehardie.com/notes/009): the
             likelihood with A0 (both 2F1 branches), P(alive) and the
             conditional expectation; every likelihood is cross-checked
             against direct numerical integration of the dropout time.

Writes test/reference/btyd_reference.csv, read by sql/btyd_models.sql.
Rerun after changing the grid:  python3 test/reference/btyd_reference.py
(Debian: apt-get install python3-mpmath).
"""
import csv
import os

import mpmath as mp

mp.mp.dps = 50

# parameter sets: the CDNOW fits, and sets that put alpha and beta far apart
# (the 2F1 argument near 1) or alpha > beta (the other branch)
MBG = {
    "cdnow": (0.525, 6.183, 0.891, 1.614),
    "a_near_1": (0.4, 3.0, 1.0001, 2.5),
    "small_ab": (1.2, 0.8, 0.3, 0.4),
}
PNBD = {
    "cdnow": (0.553, 10.578, 0.606, 11.669),
    "alpha_gt_beta": (0.8, 20.0, 0.6, 2.0),
    "beta_far_above": (0.5, 0.5, 0.8, 200.0),
    "alpha_far_above": (2.0, 300.0, 1.5, 0.3),
    "alpha_eq_beta": (0.7, 5.0, 1.0, 5.0),
    "s_is_1": (0.6, 8.0, 1.0, 12.0),
}
# customers (x, t_x, T): one-time buyers, x = 200, t_x = T, short and long
CUSTOMERS = [
    (0, 0, 38.86), (0, 0, 0.5), (1, 1.71, 38.86), (2, 30.43, 38.86),
    (5, 20, 20), (7, 35.5, 36), (30, 12.25, 52), (200, 38, 39),
    (200, 10, 39), (200, 39, 39), (12, 1e-3, 104),
]
HORIZONS = [1, 39, 520]


def mbg_loglik(x, tx, T, r, al, a, b):
    x, tx, T, r, al, a, b = map(mp.mpf, (x, tx, T, r, al, a, b))
    c = mp.gamma(r + x) * al**r / mp.gamma(r)
    l1 = mp.beta(a, b + x + 1) / mp.beta(a, b) * c / (al + T)**(r + x)
    l2 = mp.beta(a + 1, b + x) / mp.beta(a, b) * c / (al + tx)**(r + x)
    return mp.log(l1 + l2)


def mbg_p_alive(x, tx, T, r, al, a, b):
    x, tx, T, r, al, a, b = map(mp.mpf, (x, tx, T, r, al, a, b))
    return 1 / (1 + a / (b + x) * ((al + T) / (al + tx))**(r + x))


def mbg_expected(h, x, tx, T, r, al, a, b):
    h, x, tx, T, r, al, a, b = map(mp.mpf, (h, x, tx, T, r, al, a, b))
    z = h / (al + T + h)
    f = mp.hyp2f1(r + x, b + x + 1, a + b + x, z)
    e = (a + b + x) / (a - 1) * (1 - ((al + T) / (al + T + h))**(r + x) * f)
    return e * mbg_p_alive(x, tx, T, r, al, a, b)


def pnbd_a0(x, tx, T, r, al, s, be):
    """A0 of Fader & Hardie (2005) with its two branches."""
    if al >= be:
        p2, m = s + 1, al
    else:
        p2, m = r + x, be
    q = r + s + x
    f1 = mp.hyp2f1(q, p2, q + 1, abs(al - be) / (m + tx)) / (m + tx)**q
    f2 = mp.hyp2f1(q, p2, q + 1, abs(al - be) / (m + T)) / (m + T)**q
    return f1 - f2


def pnbd_parts(x, tx, T, r, al, s, be):
    x, tx, T, r, al, s, be = map(mp.mpf, (x, tx, T, r, al, s, be))
    if al == be:
        q = r + s + x
        a0 = ((al + tx)**-q - (al + T)**-q)
    else:
        a0 = pnbd_a0(x, tx, T, r, al, s, be)
    alive = 1 / ((al + T)**(r + x) * (be + T)**s)
    dead = s / (r + s + x) * a0
    # cross-check: s * int_{tx}^{T} (al+u)^-(r+x) (be+u)^-(s+1) du
    # (scaled to 1 at u = tx: mpmath's quadrature error is absolute)
    sc = (al + tx)**(r + x) * (be + tx)**(s + 1)
    dead_q = s / sc * mp.quad(lambda u: ((al + tx) / (al + u))**(r + x)
                              * ((be + tx) / (be + u))**(s + 1), [tx, T])
    assert dead == 0 or abs(dead / dead_q - 1) < mp.mpf(10)**-20, (x, tx, T, dead, dead_q)
    return alive, dead, mp.gamma(r + x) * al**r * be**s / mp.gamma(r)


def pnbd_loglik(x, tx, T, r, al, s, be):
    alive, dead, c = pnbd_parts(x, tx, T, r, al, s, be)
    return mp.log(c) + mp.log(alive + dead)


def pnbd_p_alive(x, tx, T, r, al, s, be):
    alive, dead, _ = pnbd_parts(x, tx, T, r, al, s, be)
    return alive / (alive + dead)


def pnbd_expected(h, x, tx, T, r, al, s, be):
    h, x, T, r, al, s, be = map(mp.mpf, (h, x, T, r, al, s, be))
    if s == 1:
        e = (r + x) * (be + T) / (al + T) * mp.log((be + T + h) / (be + T))
    else:
        e = ((r + x) * (be + T) / ((al + T) * (s - 1))
             * (1 - ((be + T) / (be + T + h))**(s - 1)))
    return e * pnbd_p_alive(x, tx, T, r, al, s, be)


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "btyd_reference.csv")
    rows = []
    for model, sets, fns in (
        ("mbgnbd", MBG, (mbg_loglik, mbg_p_alive, mbg_expected)),
        ("pareto_nbd", PNBD, (pnbd_loglik, pnbd_p_alive, pnbd_expected)),
    ):
        loglik, p_alive, expected = fns
        for name, p in sets.items():
            for x, tx, T in CUSTOMERS:
                rows.append((model, name, "loglik", "", x, tx, T, *p, loglik(x, tx, T, *p)))
                rows.append((model, name, "p_alive", "", x, tx, T, *p, p_alive(x, tx, T, *p)))
                for h in HORIZONS:
                    rows.append((model, name, "expected", h, x, tx, T, *p, expected(h, x, tx, T, *p)))
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["model", "params", "fn", "horizon", "x", "t_x", "t", "p1", "p2", "p3", "p4", "value"])
        for row in rows:
            w.writerow([*row[:-1], mp.nstr(row[-1], 17, min_fixed=-1, max_fixed=-1)])
    print(f"{len(rows)} reference values written to {out}")


if __name__ == "__main__":
    main()
