#!/usr/bin/env python3
"""Reference values for sql/models.sql, computed independently of loyalty.

Plain-Python log-likelihoods of BG/NBD (Fader, Hardie & Lee 2005, eq. 6) and
of the Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"),
maximised by Nelder-Mead on log-parameters; the holdout prediction is eq. 10
with mpmath's 2F1. Needs python3 and mpmath (Debian: python3-mpmath).

Export the inputs from a database where sql/models.sql has run (up to its
first refresh() of the simulated shop):
  psql -At -F, -c "SELECT x, t_x, t, coalesce(repeat_value::float8::text, '') FROM loyalty.model_inputs" > inputs.csv
  psql -At -F, -c "SELECT customer_id, (ordered_at AT TIME ZONE 'UTC')::date - (now() AT TIME ZONE 'UTC')::date
                     FROM loyalty.orders WHERE counts" > orders.csv
  python3 test/offline/models_reference.py inputs.csv orders.csv
"""
import sys
import csv, math
from mpmath import mp, mpf, hyp2f1
mp.dps = 30
from mpmath import loggamma as lg
def lbeta(a, b): return lg(a) + lg(b) - lg(a + b)

def bg_ll(p, data):
    r, al, a, b = p
    tot = 0.0
    for x, tx, T in data:
        A = math.lgamma(r + x) - math.lgamma(r) + r * math.log(al)
        l1 = (math.lgamma(a) + math.lgamma(b + x) - math.lgamma(a + b + x)) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)) - (r + x) * math.log(al + T)
        if x > 0:
            l2 = (math.lgamma(a + 1) + math.lgamma(b + x - 1) - math.lgamma(a + b + x)) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)) - (r + x) * math.log(al + tx)
            m = max(l1, l2); s = m + math.log(math.exp(l1 - m) + math.exp(l2 - m))
        else:
            s = l1
        tot += A + s
    return tot

def gg_ll(p, data):
    pp, q, g = p
    tot = 0.0
    for x, m in data:
        tot += (math.lgamma(pp * x + q) - math.lgamma(pp * x) - math.lgamma(q) + q * math.log(g)
                + (pp * x - 1) * math.log(m) + pp * x * math.log(x) - (pp * x + q) * math.log(g + x * m))
    return tot

def nelder_mead(f, x0, step=0.5, tol=1e-13, maxit=20000):
    n = len(x0)
    pts = [list(x0)] + [[x0[j] + (step if j == i else 0) for j in range(n)] for i in range(n)]
    vals = [f(p) for p in pts]
    for it in range(maxit):
        order = sorted(range(n + 1), key=lambda i: vals[i]); pts = [pts[i] for i in order]; vals = [vals[i] for i in order]
        if abs(vals[-1] - vals[0]) < tol * (1 + abs(vals[0])) and max(abs(pts[-1][j]-pts[0][j]) for j in range(n)) < 1e-10: break
        c = [sum(p[j] for p in pts[:-1]) / n for j in range(n)]
        xr = [c[j] + (c[j] - pts[-1][j]) for j in range(n)]; fr = f(xr)
        if fr < vals[0]:
            xe = [c[j] + 2 * (c[j] - pts[-1][j]) for j in range(n)]; fe = f(xe)
            if fe < fr: pts[-1], vals[-1] = xe, fe
            else: pts[-1], vals[-1] = xr, fr
        elif fr < vals[-2]: pts[-1], vals[-1] = xr, fr
        else:
            xc = [c[j] + 0.5 * (pts[-1][j] - c[j]) for j in range(n)]; fc = f(xc)
            if fc < vals[-1]: pts[-1], vals[-1] = xc, fc
            else:
                pts = [pts[0]] + [[pts[0][j] + 0.5 * (p[j] - pts[0][j]) for j in range(n)] for p in pts[1:]]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
    return pts[0], vals[0]

def fit_bg(data):
    best = None
    x0 = [0.0, 0.0, 0.0, 0.0]
    for rep in range(6):
        p, v = nelder_mead(lambda q: -bg_ll([math.exp(t) for t in q], data), x0)
        x0 = p
    return [math.exp(t) for t in p], -v

def fit_gg(data):
    x0 = [0.0, 0.0, 0.0]
    for rep in range(6):
        p, v = nelder_mead(lambda q: -gg_ll([math.exp(t) for t in q], data), x0)
        x0 = p
    return [math.exp(t) for t in p], -v

def bg_expected(h, x, tx, T, r, al, a, b):
    # FHL (2005) eq. 10, with mpmath's 2F1
    r, al, a, b, x, tx, T, h = map(mpf, (r, al, a, b, x, tx, T, h))
    z = h / (al + T + h)
    num = (a + b + x - 1) / (a - 1) * (1 - ((al + T) / (al + T + h)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z))
    den = 1 + (x > 0) * a / (b + x - 1) * ((al + T) / (al + tx)) ** (r + x)
    return float(num / den)

if __name__ == '__main__':
    rows = list(csv.reader(open(sys.argv[1])))
    bg = [(int(x), float(tx), float(T)) for x, tx, T, rv in rows]
    gg = [(int(x), float(rv)) for x, tx, T, rv in rows if int(x) > 0 and rv and float(rv) > 0]
    print('bgnbd', fit_bg(bg))
    print('gg', fit_gg(gg), len(gg))
    # holdout: calibration up to 90 days before today (day offsets relative to today)
    h = 90
    days = {}
    for cid, d in csv.reader(open(sys.argv[2])):
        days.setdefault(cid, set()).add(int(d))
    cal_end = -h
    cal = []
    for cid, ds in days.items():
        ds = sorted(ds)
        if ds[0] >= cal_end: continue
        before = [d for d in ds if d < cal_end]
        cal.append((len(before) - 1, float(max(before) - ds[0]), float(cal_end - ds[0]), sum(1 for d in ds if d >= cal_end)))
    (r, al, a, b), ll = fit_bg([(x, tx, T) for x, tx, T, _ in cal])
    print('cal fit', r, al, a, b, ll)
    bins = {}
    for x, tx, T, act in cal:
        k = '7+' if x >= 7 else str(x)
        bins.setdefault(k, []).append((bg_expected(h, x, tx, T, r, al, a, b), act))
    for k in sorted(bins, key=lambda s: int(s.rstrip('+'))):
        v = bins[k]
        print(k, len(v), sum(p for p, _ in v) / len(v), sum(a for _, a in v) / len(v))
