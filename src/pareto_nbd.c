/*
 * pareto_nbd.c — the Pareto/NBD model for the scoring component: Poisson
 * purchases and an exponential lifetime, both rates gamma-distributed over
 * customers.  Per-customer likelihood, P(alive) and conditional
 * expectation, and the fitting aggregate loyalty.pareto_nbd_fit (rows
 * collected and compressed as for loyalty.bgnbd_fit, optimiser of btyd.c).
 *
 * References
 *   [SMC87] Schmittlein, Morrison & Colombo (1987), "Counting Your
 *           Customers: Who Are They and What Will They Do Next?",
 *           Management Science 33(1), 1-24.
 *   [FH05]  Fader & Hardie (2005), "A Note on Deriving the Pareto/NBD
 *           Model and Related Expressions", brucehardie.com/notes/009.
 *   [FHL05b] Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value
 *           Curves for Customer Base Analysis", JMR 42(4) (the CDNOW fit).
 *
 * Likelihood.  Given lambda ~ Gamma(r, alpha) and mu ~ Gamma(s, beta),
 * a customer with x repeat purchases, the last at t_x, observed for T:
 *
 *   L = G(r+x) alpha^r beta^s / G(r) [ (alpha+T)^-(r+x) (beta+T)^-s + s I ]
 *   I = int_{t_x}^{T} (alpha+tau)^-(r+x) (beta+tau)^-(s+1) dtau
 *
 * (the customer is alive at T, or died at some tau in (t_x, T]).  [FH05]
 * writes s I = s/(r+s+x) A0 with A0 a difference of two Gaussian
 * hypergeometric functions, whose branch depends on the parameters so
 * that the argument lies in [0, 1):
 *
 *   alpha >= beta:  I = G(t_x) - G(T),
 *     G(t) = (alpha+t)^-(r+s+x)/(r+s+x) 2F1(r+s+x, s+1; r+s+x+1; (alpha-beta)/(alpha+t))
 *   alpha < beta:   the same with alpha <-> beta and s+1 -> r+x.
 *
 * Numerics.  With a = r+s+x, the 2F1 above is summed after Euler's
 * transformation 2F1(a, b; a+1; z) = (1-z)^(1-b) 2F1(1, a+1-b; a+1; z),
 * whose terms (a+1-b)_n/(a+1)_n z^n are positive (a+1-b is r+x or s+1) and
 * shrink by at least z per term, so there is no cancellation and no
 * growth of terms for large x; the parameter derivatives are summed in the
 * same loop (analytic gradient).  The series is used while z <= 0.9 at
 * t_x (at most a few hundred terms) and G(T)/G(t_x) <= 0.9 (the difference
 * keeps all but one digit).  Otherwise (alpha and beta far apart, or t_x
 * close to T) I is integrated directly: Gauss-Legendre on panels in
 * w = log(min(alpha,beta) + tau), where the log-integrand is concave with
 * slope between -(r+s+x) and 1, on panels over which the log-integrand
 * changes by at most about 3, stopping when the concave bound on the rest
 * is below 1e-17 of the sum.  The
 * gradient of I is integrated with it.  Everything is in log space:
 * log L = base + log(1 + e^d) with d = log(s I) - log of the first term.
 *
 * The boundary s, beta -> infinity with s/beta = mu fixed: every customer
 * has the same dropout rate mu (the Gamma(s, beta) of the rates
 * degenerates).  Given lambda and mu the likelihood is
 *   lambda^x e^-(lambda+mu)T + mu lambda^x int_{t_x}^T e^-(lambda+mu)tau dtau,
 * and E_lambda[lambda^x e^-lambda tau] = G(r+x)/G(r) alpha^r (alpha+tau)^-(r+x), so
 *
 *   L = G(r+x) alpha^r / G(r) [ (alpha+T)^-(r+x) e^-mu T + mu J ]
 *   J = int_{t_x}^{T} (alpha+tau)^-(r+x) e^-mu tau dtau
 *
 * (the pointwise limit of the header's: beta^s s (beta+tau)^-(s+1) ->
 * mu e^-mu tau).  J is a difference of incomplete gamma functions of
 * negative order; it is integrated as I is, in w = log(alpha + tau), where
 * the log-integrand (1-r-x) w - mu e^w is concave.  P(alive) = 1/(1+e^d),
 * d = log(mu J) - log of the first term, and
 *   E[Y(t)] = P(alive) (r+x)/((alpha+T) mu) (1 - e^-mu t),
 * the limit of the header's expectation ((beta+T)/(s-1) -> 1/mu,
 * ((beta+T)/(beta+T+t))^(s-1) -> e^-mu t).
 */
#include "postgres.h"

#include <float.h>
#include <math.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "btyd.h"

#define PNBD_SERIES_ZMAX	0.9		/* series up to this argument */
#define PNBD_SERIES_QMAX	0.9		/* and G(T)/G(t_x) up to this */
#define PNBD_MAX_TERMS		100000
#define PNBD_MAX_PANELS		1000000
/*
 * s and beta both at least this: the SQL functions compute the limit with
 * mu = s/beta.  There the limit differs from the finite model by about
 * (mu tau)^2/s relatively, less than the rounding of the finite formulas
 * ((s+1) times a difference of logs of numbers near beta).
 */
#define PNBD_LIMIT_MIN		1e10

/* 8-point Gauss-Legendre nodes and weights on [-1, 1] (positive half) */
static const double PnbdGLx[4] = {
	0.1834346424956498049, 0.5255324099163289858,
	0.7966664774136267396, 0.9602898564975362317
};
static const double PnbdGLw[4] = {
	0.3626837833783619830, 0.3137066458778872873,
	0.2223810344533744706, 0.1012285362903762592
};

/* Check the four Pareto/NBD parameters */
static void
PnbdCheckParams(double r, double alpha, double s, double beta)
{
	BtydCheckParam("r", r);
	BtydCheckParam("alpha", alpha);
	BtydCheckParam("s", s);
	BtydCheckParam("beta", beta);
}

/*
 * log G(t) of the header and its gradient g[] in (r, alpha, s, beta),
 * summed as (mx)^-a / a (1-z)^(1-b) H,  H = sum_n (c)_n/(a+1)_n z^n,
 * c = a+1-b, mx = max(alpha, beta) + t, 1-z = (min(alpha, beta) + t)/mx.
 * Returns false if the series did not converge in PNBD_MAX_TERMS terms.
 */
static bool
PnbdLogG(double x, double t, double r, double alpha, double s, double beta,
		 double *lg, double *g)
{
	bool		abranch = (alpha >= beta);
	double		mx = (abranch ? alpha : beta) + t;
	double		mn = (abranch ? beta : alpha) + t;
	double		a = r + s + x;
	double		b = abranch ? s + 1.0 : r + x;
	double		c = a + 1.0 - b;
	double		z = fabs(alpha - beta) / mx;
	double		l1mz = log(mn / mx);
	double		h = 1.0,
				H = 1.0,
				pc = 0.0,		/* sum_{j<n} 1/(c+j): d log h_n / dc */
				pa = 0.0,		/* -sum_{j<n} 1/(a+1+j): d log h_n / da */
				Hc = 0.0,
				Ha = 0.0,
				Hn = 0.0,		/* sum n h_n = z dH/dz */
				dHdz,
				dA,
				dB,
				dmx,
				dmn;
	int			n;

	for (n = 0; n < PNBD_MAX_TERMS; n++)
	{
		if (h * (n + 1.0) * z <= 1e-17 * H * (1.0 - z) * (1.0 - z))
			break;
		pc += 1.0 / (c + n);
		pa -= 1.0 / (a + 1.0 + n);
		h *= (c + n) / (a + 1.0 + n) * z;
		H += h;
		Hc += h * pc;
		Ha += h * pa;
		Hn += h * (n + 1.0);
	}
	if (n == PNBD_MAX_TERMS)
		return false;
	dHdz = (z > 0.0) ? Hn / z : c / (a + 1.0);

	*lg = -a * log(mx) - log(a) + (1.0 - b) * l1mz + log(H);
	/* d/da with c = a+1-b following, d/db likewise */
	dA = -log(mx) - 1.0 / a + (Ha + Hc) / H;
	dB = -l1mz - Hc / H;
	/* d/d(max parameter) and d/d(min parameter) through mx, mn and z */
	dmx = -c / mx + (dHdz / H) * mn / (mx * mx);
	dmn = (1.0 - b) / mn - (dHdz / H) / mx;
	if (abranch)
	{
		g[0] = dA;				/* r: a */
		g[2] = dA + dB;			/* s: a and b = s+1 */
		g[1] = dmx;
		g[3] = dmn;
	}
	else
	{
		g[0] = dA + dB;			/* r: a and b = r+x */
		g[2] = dA;
		g[1] = dmn;
		g[3] = dmx;
	}
	return true;
}

/* The last log G(t) computed for one x, reused by the next cell with the same (x, t) */
typedef struct PnbdGCache
{
	bool		valid;
	bool		ok;
	double		x;
	double		t;
	double		lg;
	double		g[4];
} PnbdGCache;

/* PnbdLogG through a one-entry cache c (may be NULL), valid for one parameter point */
static bool
PnbdLogGCached(PnbdGCache *c, double x, double t, double r, double alpha,
			   double s, double beta, double *lg, double *g)
{
	bool		ok;

	if (c != NULL && c->valid && c->x == x && c->t == t)
	{
		*lg = c->lg;
		memcpy(g, c->g, sizeof(c->g));
		return c->ok;
	}
	ok = PnbdLogG(x, t, r, alpha, s, beta, lg, g);
	if (c != NULL)
	{
		c->valid = true;
		c->ok = ok;
		c->x = x;
		c->t = t;
		c->lg = *lg;
		memcpy(c->g, g, sizeof(c->g));
	}
	return ok;
}

/*
 * log I by Gauss-Legendre (see the header) and its gradient g[] in
 * (r, alpha, s, beta), differentiated under the integral:
 *   d log f/dr = -log(alpha+tau), d log f/dalpha = -(r+x)/(alpha+tau),
 *   d log f/ds = -log(beta+tau),  d log f/dbeta = -(s+1)/(beta+tau).
 */
static double
PnbdLogIQuad(double x, double tx, double T, double r, double alpha,
			 double s, double beta, double *g)
{
	bool		aminor = (alpha <= beta);
	double		m = Min(alpha, beta),
				D = fabs(alpha - beta),
				m0 = m + tx,
				W = BtydLog1pRatio(T - tx, m0),
				lat0 = log(alpha + tx),
				lbt0 = log(beta + tx),
				w0 = 0.0,
				S = 0.0,
				Sr = 0.0,
				Sa = 0.0,
				Ss = 0.0,
				Sb = 0.0;

#define PNBD_APT(M) (aminor ? (M) : (M) + D)	/* alpha + tau at m + tau = M */
#define PNBD_BPT(M) (aminor ? (M) + D : (M))	/* beta + tau */
#define PNBD_SLOPE(M) (1.0 - (r + x) * (M) / PNBD_APT(M) - (s + 1.0) * (M) / PNBD_BPT(M))

	for (int64 p = 0; p < PNBD_MAX_PANELS && w0 < W; p++)
	{
		double		width = 2.0 / (fabs(PNBD_SLOPE(m0 * exp(w0))) + 1.0),
					w1,
					half,
					mid,
					M,
					slope;

		/*
		 * The log-integrand is concave: its slope is largest in magnitude
		 * at an end of the panel.  Keep its change over the panel <= ~3.
		 */
		for (int j = 0; j < 60; j++)
		{
			w1 = Min(W, w0 + width);
			if (fabs(PNBD_SLOPE(m0 * exp(w1))) * (w1 - w0) <= 3.0)
				break;
			width *= 0.5;
		}
		half = 0.5 * (w1 - w0);
		mid = w0 + half;
		for (int i = 0; i < 8; i++)
		{
			double		w = mid + (i < 4 ? -1.0 : 1.0) * half * PnbdGLx[i % 4];
			double		wt = half * PnbdGLw[i % 4];
			double		Mw = m0 * exp(w);	/* m + tau */
			double		apt = PNBD_APT(Mw),
						bpt = PNBD_BPT(Mw),
						la = log(apt) - lat0,
						lb = log(bpt) - lbt0,
						f = wt * exp(w - (r + x) * la - (s + 1.0) * lb);

			S += f;
			Sr -= f * la;
			Ss -= f * lb;
			Sa -= f * (r + x) / apt;
			Sb -= f * (s + 1.0) / bpt;
		}
		/* rest <= integrand(w1) / |slope(w1)| by concavity, once decreasing */
		M = m0 * exp(w1);
		slope = PNBD_SLOPE(M);
		if (slope < 0.0 && w1 < W)
		{
			double		lf1 = w1 - (r + x) * (log(PNBD_APT(M)) - lat0)
				- (s + 1.0) * (log(PNBD_BPT(M)) - lbt0);

			if (lf1 - log(-slope) < log(1e-17 * S))
				break;
		}
		w0 = w1;
		if ((p & 1023) == 1023)
			CHECK_FOR_INTERRUPTS();
	}
#undef PNBD_APT
#undef PNBD_BPT
#undef PNBD_SLOPE
	/* tau-integral = m0 * w-integral; normalisation (alpha+tx)^-(r+x) (beta+tx)^-(s+1) */
	g[0] = Sr / S - lat0;
	g[1] = Sa / S;
	g[2] = Ss / S - lbt0;
	g[3] = Sb / S;
	return log(m0) + log(S) - (r + x) * lat0 - (s + 1.0) * lbt0;
}

/*
 * log I of the header and its gradient g[] in (r, alpha, s, beta);
 * -inf (and a zero gradient) when t_x = T.  ctx and cT (may be NULL) cache
 * G(t_x) and G(T) across the cells of one evaluation.
 */
static double
PnbdLogI(double x, double tx, double T, double r, double alpha,
		 double s, double beta, double *g, PnbdGCache *ctx, PnbdGCache *cT)
{
	double		lg1,
				lg2,
				g1[4],
				g2[4];

	if (!(tx < T))
	{
		for (int i = 0; i < 4; i++)
			g[i] = 0.0;
		return -INFINITY;
	}
	if (fabs(alpha - beta) <= PNBD_SERIES_ZMAX * (Max(alpha, beta) + tx) &&
		PnbdLogGCached(ctx, x, tx, r, alpha, s, beta, &lg1, g1) &&
		PnbdLogGCached(cT, x, T, r, alpha, s, beta, &lg2, g2) &&
		lg2 - lg1 <= log(PNBD_SERIES_QMAX))
	{
		double		q = exp(lg2 - lg1);

		for (int i = 0; i < 4; i++)
			g[i] = (g1[i] - q * g2[i]) / (1.0 - q);
		return lg1 + log1p(-q);
	}
	return PnbdLogIQuad(x, tx, T, r, alpha, s, beta, g);
}

/*
 * One customer's log-likelihood (header; [FH05] the likelihood with A0)
 * and, if grad is not NULL, its gradient in log(r, alpha, s, beta).
 * Also returns d = log(s I) - log((alpha+T)^-(r+x) (beta+T)^-s), whose
 * logistic 1/(1+e^-d) is the probability of having died in (t_x, T].
 */
static double
PnbdLoglikRow(int32 x, double tx, double T, double r, double alpha,
			  double s, double beta, double *grad, double *dout,
			  PnbdGCache *ctx, PnbdGCache *cT)
{
	double		l1Ta = BtydLog1pRatio(T, alpha),
				l1Tb = BtydLog1pRatio(T, beta),
				laT = log(alpha + T),
				lbT = log(beta + T),
				gI[4],
				lI,
				d,
				sig,
				ll;

	if (x == 0)
		tx = 0.0;
	lI = PnbdLogI(x, tx, T, r, alpha, s, beta, gI, ctx, cT);
	d = log(s) + lI + (r + x) * laT + s * lbT;
	ll = BtydLogPoch(r, x) - r * l1Ta - x * laT - s * l1Tb + BtydSoftplus(d, &sig);
	if (dout)
		*dout = d;
	if (grad)
	{
		double		qa = alpha / (alpha + T),
					qb = beta / (beta + T);

		if (lI == -INFINITY)
			sig = 0.0;
		grad[0] = r * (BtydDigammaDiff(r, x) - l1Ta + sig * (gI[0] + laT));
		grad[1] = r - (r + x) * qa + sig * alpha * (gI[1] + (r + x) / (alpha + T));
		grad[2] = s * (-l1Tb + sig * (1.0 / s + gI[2] + lbT));
		grad[3] = s - s * qb + sig * beta * (gI[3] + s / (beta + T));
	}
	return ll;
}

/*
 * log J of the header (the limit s, beta -> infinity) and its gradient g[]
 * in (r, alpha, mu), by Gauss-Legendre on panels in w = log((alpha+tau)/(alpha+t_x)):
 * log-integrand (1-r-x) w - mu (alpha+t_x) (e^w - 1) relative to its value
 * at t_x, slope 1 - (r+x) - mu (alpha+tau), concave; panels and the
 * stopping rule as in PnbdLogIQuad.  Under the integral,
 *   d log f/dr = -log(alpha+tau), d log f/dalpha = -(r+x)/(alpha+tau),
 *   d log f/dmu = -tau.
 * -inf (and a zero gradient) when t_x = T.
 */
static double
PnbdLimitLogJ(double x, double tx, double T, double r, double alpha,
			  double mu, double *g)
{
	double		m0 = alpha + tx,
				W,
				lat0 = log(m0),
				rx = r + x,
				w0 = 0.0,
				S = 0.0,
				Sr = 0.0,
				Sa = 0.0,
				Sm = 0.0;

	if (!(tx < T))
	{
		for (int i = 0; i < 3; i++)
			g[i] = 0.0;
		return -INFINITY;
	}
	W = BtydLog1pRatio(T - tx, m0);

#define PNBD_LSLOPE(w) (1.0 - rx - mu * m0 * exp(w))
#define PNBD_LLOGF(w) ((1.0 - rx) * (w) - mu * m0 * expm1(w))

	for (int64 p = 0; p < PNBD_MAX_PANELS && w0 < W; p++)
	{
		double		width = 2.0 / (fabs(PNBD_LSLOPE(w0)) + 1.0),
					w1,
					half,
					mid,
					slope;

		/* concave: the slope is largest in magnitude at an end of the panel */
		for (int j = 0; j < 60; j++)
		{
			w1 = Min(W, w0 + width);
			if (Max(fabs(PNBD_LSLOPE(w0)), fabs(PNBD_LSLOPE(w1))) * (w1 - w0) <= 3.0)
				break;
			width *= 0.5;
		}
		half = 0.5 * (w1 - w0);
		mid = w0 + half;
		for (int i = 0; i < 8; i++)
		{
			double		w = mid + (i < 4 ? -1.0 : 1.0) * half * PnbdGLx[i % 4];
			double		wt = half * PnbdGLw[i % 4];
			double		em1 = expm1(w);
			double		f = wt * exp(PNBD_LLOGF(w));

			S += f;
			Sr -= f * w;
			Sa -= f * rx / (m0 * (1.0 + em1));
			Sm -= f * m0 * em1;
		}
		/* rest <= integrand(w1) / |slope(w1)| by concavity, once decreasing */
		slope = PNBD_LSLOPE(w1);
		if (slope < 0.0 && w1 < W &&
			PNBD_LLOGF(w1) - log(-slope) < log(1e-17 * S))
			break;
		w0 = w1;
		if ((p & 1023) == 1023)
			CHECK_FOR_INTERRUPTS();
	}
#undef PNBD_LSLOPE
#undef PNBD_LLOGF
	/* tau-integral = m0 * w-integral; normalisation (alpha+tx)^-(r+x) e^-mu tx */
	g[0] = Sr / S - lat0;
	g[1] = Sa / S;
	g[2] = Sm / S - tx;
	return log(m0) + log(S) - rx * lat0 - mu * tx;
}

/*
 * One customer's log-likelihood in the limit (header) and, if grad is not
 * NULL, its gradient in log(r, alpha, mu); dout as for PnbdLoglikRow:
 *   log L = lpoch(r,x) - r log1p(T/alpha) - x log(alpha+T) - mu T + softplus(d),
 *   d = log mu + log J + (r+x) log(alpha+T) + mu T.
 */
static double
PnbdLimitLoglikRow(int32 x, double tx, double T, double r, double alpha,
				   double mu, double *grad, double *dout)
{
	double		l1Ta = BtydLog1pRatio(T, alpha),
				laT = log(alpha + T),
				gJ[3],
				lJ,
				d,
				sig,
				ll;

	if (x == 0)
		tx = 0.0;
	lJ = PnbdLimitLogJ(x, tx, T, r, alpha, mu, gJ);
	d = log(mu) + lJ + (r + x) * laT + mu * T;
	ll = BtydLogPoch(r, x) - r * l1Ta - x * laT - mu * T + BtydSoftplus(d, &sig);
	if (dout)
		*dout = d;
	if (grad)
	{
		if (lJ == -INFINITY)
			sig = 0.0;
		grad[0] = r * (BtydDigammaDiff(r, x) - l1Ta + sig * (gJ[0] + laT));
		grad[1] = r - (r + x) * alpha / (alpha + T) + sig * alpha * (gJ[1] + (r + x) / (alpha + T));
		grad[2] = -mu * T + sig * (1.0 + mu * (gJ[2] + T));
	}
	return ll;
}

/* Are s and beta so large that the SQL functions compute the limit? */
static inline bool
PnbdAtLimit(double s, double beta)
{
	return s >= PNBD_LIMIT_MIN && beta >= PNBD_LIMIT_MIN;
}

/* Mean negative limit log-likelihood and its gradient in log(r, alpha, mu) */
static double
PnbdLimitObjective(const double *theta, double *grad, void *arg)
{
	BgnbdData  *d = (BgnbdData *) arg;
	double		r = exp(theta[0]),
				alpha = exp(theta[1]),
				mu = exp(theta[2]);
	double		ll = 0.0,
				g[3] = {0.0, 0.0, 0.0};

	for (int64 i = 0; i < d->ncells; i++)
	{
		const BgnbdCell *c = &d->cells[i];
		double		gi[3];

		ll += c->w * PnbdLimitLoglikRow(c->x, d->tv[c->itx], d->tv[c->iT],
										r, alpha, mu, gi, NULL);
		for (int j = 0; j < 3; j++)
			g[j] += c->w * gi[j];
		if ((i & 65535) == 65535)
			CHECK_FOR_INTERRUPTS();
	}
	for (int j = 0; j < 3; j++)
		grad[j] = -g[j] / d->wsum;
	return -ll / d->wsum;
}

/* P(alive at T | x, t_x, T) = 1 / (1 + e^d), [FH05] (the P(alive) section) */
static double
PnbdPAlive(int32 x, double tx, double T, double r, double alpha,
		   double s, double beta)
{
	double		d,
				p;

	if (PnbdAtLimit(s, beta))
		(void) PnbdLimitLoglikRow(x, tx, T, r, alpha, s / beta, NULL, &d);
	else
		(void) PnbdLoglikRow(x, tx, T, r, alpha, s, beta, NULL, &d, NULL, NULL);
	(void) BtydSoftplus(-d, &p);
	return p;
}

/*
 * Expected purchases in (T, T+t], [SMC87] / [FH05] (conditional
 * expectation):
 *
 *   E[Y(t)] = P(alive) (r+x)(beta+T) / ((alpha+T)(s-1)) [1 - ((beta+T)/(beta+T+t))^(s-1)]
 *
 * written as P(alive) (r+x)(beta+T)/(alpha+T) L e1((s-1) L), L =
 * log1p(t/(beta+T)), e1(y) = (1 - e^-y)/y, which is continuous at s = 1
 * (the limit (r+x)(beta+T)/(alpha+T) L) and evaluated in logs.
 */
static double
PnbdExpected(double t, int32 x, double tx, double T, double r, double alpha,
			 double s, double beta)
{
	double		p,
				L,
				y,
				le1;

	if (t <= 0.0)
		return 0.0;
	p = PnbdPAlive(x, tx, T, r, alpha, s, beta);
	if (p <= 0.0)
		return 0.0;
	if (PnbdAtLimit(s, beta))
	{
		/* limit (header): P(alive) (r+x)/(alpha+T) t e1(mu t) */
		y = s / beta * t;
		return exp(log(p) + log(r + x) - log(alpha + T) + log(t) + log(-expm1(-y)) - log(y));
	}
	L = BtydLog1pRatio(t, beta + T);
	y = (s - 1.0) * L;
	if (y > 0.0)
		le1 = log(-expm1(-y)) - log(y);
	else if (y < 0.0)
		le1 = ((-y > 30.0) ? -y + log1p(-exp(y)) : log(expm1(-y))) - log(-y);
	else
		le1 = 0.0;
	return exp(log(p) + log(r + x) + log(beta + T) - log(alpha + T) + log(L) + le1);
}

/*
 * Mean negative Pareto/NBD log-likelihood over the compressed cells and
 * its gradient in theta = log(r, alpha, s, beta).
 */
static double
PnbdObjective(const double *theta, double *grad, void *arg)
{
	BgnbdData  *d = (BgnbdData *) arg;
	double		r = exp(theta[0]),
				alpha = exp(theta[1]),
				s = exp(theta[2]),
				beta = exp(theta[3]);
	double		ll = 0.0,
				g[4] = {0.0, 0.0, 0.0, 0.0};
	PnbdGCache	ctx = {0},
				cT = {0};

	/* cells are sorted by (x, T, t_x): one-time buyers share G(0), runs share G(T) */
	for (int64 i = 0; i < d->ncells; i++)
	{
		const BgnbdCell *c = &d->cells[i];
		double		gi[4];

		ll += c->w * PnbdLoglikRow(c->x, d->tv[c->itx], d->tv[c->iT],
								   r, alpha, s, beta, gi, NULL, &ctx, &cT);
		for (int j = 0; j < 4; j++)
			g[j] += c->w * gi[j];
		if ((i & 65535) == 65535)
			CHECK_FOR_INTERRUPTS();
	}
	for (int j = 0; j < 4; j++)
		grad[j] = -g[j] / d->wsum;
	return -ll / d->wsum;
}

/*
 * Does the subsample sub show the limit far below the four-parameter
 * maximum, so that fitting the limit on all n rows cannot change the
 * choice?  With per-cell differences d = loglik(theta4) - loglik(limit lt)
 * at the two subsample optima (weights w, m = sum w), the full-data gap is
 * estimated as n mean(d) with standard error n sd(d)/sqrt(m); "far below":
 * the estimate exceeds 10 standard errors plus PNBD_SKIP_MARGIN
 * log-likelihood units (the subsample optima's own optimism is a few units
 * times n/m).
 */
#define PNBD_SKIP_MARGIN	100.0

static bool
PnbdLimitFarBelow(const BgnbdData *sub, const double *theta4, const double *lt, double n)
{
	double		r = exp(theta4[0]),
				alpha = exp(theta4[1]),
				s = exp(theta4[2]),
				beta = exp(theta4[3]),
				lr = exp(lt[0]),
				lalpha = exp(lt[1]),
				mu = exp(lt[2]),
				sw = 0.0,
				sd = 0.0,
				sdd = 0.0,
				mean,
				var;
	PnbdGCache	ctx = {0},
				cT = {0};

	for (int64 i = 0; i < sub->ncells; i++)
	{
		const BgnbdCell *c = &sub->cells[i];
		double		di = PnbdLoglikRow(c->x, sub->tv[c->itx], sub->tv[c->iT],
									   r, alpha, s, beta, NULL, NULL, &ctx, &cT)
			- PnbdLimitLoglikRow(c->x, sub->tv[c->itx], sub->tv[c->iT],
								 lr, lalpha, mu, NULL, NULL);

		sw += c->w;
		sd += c->w * di;
		sdd += c->w * di * di;
	}
	if (!(sw > 1.0))
		return false;
	mean = sd / sw;
	var = Max(0.0, sdd / sw - mean * mean);
	return isfinite(mean) && isfinite(var) &&
		n * mean > 10.0 * n * sqrt(var / sw) + PNBD_SKIP_MARGIN;
}

/*
 * pareto_nbd_fit final: compress, maximise the likelihood over
 * (r, alpha, s, beta) and, always, over the boundary limit (r, alpha, mu)
 * of the header; report whichever is higher.  The transition function is
 * bgnbd_fit_trans (same rows, checks).
 *
 * The limit is the supremum of the four-parameter likelihood along s, beta
 * -> infinity, which the four-parameter optimiser only approaches (the
 * gradient in log s, log beta vanishes like 1/s there): from its start it
 * may stop anywhere on the way (not converged, or "converged" on a flat
 * ridge at finite s), or reach the boundary only when the path happens to
 * lead there.  So the limit is fitted itself: from the subsample's limit
 * optimum for large data (as the four-parameter fit starts from its
 * subsample optimum), otherwise from the four-parameter end point
 * (mu = s/beta).  For large data it is not refitted on all rows when the
 * four-parameter fit is a well-determined maximum and the subsample shows
 * the limit far below it (PnbdLimitFarBelow): that keeps a large interior
 * fit at its former cost.
 *
 * The choice.  The limit is a boundary point of the four-parameter model,
 * so an interior maximum is at least as high; it wins only when genuinely
 * higher: the limit is reported when its fit converged to an interior
 * maximum of (r, alpha, mu) (BtydWellDetermined) and its mean
 * log-likelihood is at least the four-parameter one minus the rounding
 * (1e-12 relative, plus about min(s, beta) 1e-14 per customer that the
 * finite formulas lose at large s, beta: (s+1) times a difference of logs
 * near log beta).  A four-parameter fit that ran to huge s, beta is then
 * the limit.  The limit is reported converged, with the smaller of s, beta
 * exactly BTYD_LIMIT_SCALE and s/beta = mu, where the SQL functions
 * compute the limit (PnbdAtLimit); loglik is the limit's.  iterations
 * counts both fits' full-data iterations.
 */
PG_FUNCTION_INFO_V1(pareto_nbd_fit_final);
Datum
pareto_nbd_fit_final(PG_FUNCTION_ARGS)
{
	BtydState  *st = PG_ARGISNULL(0) ? NULL : (BtydState *) PG_GETARG_POINTER(0);
	MemoryContext fitcxt,
				oldcxt;
	BgnbdData	d,
				sub;
	double		theta[4] = {0.0, 0.0, 0.0, 0.0};
	double		lt[3];
	double		vals[5];
	double		fmin,
				lfmin,
				tol;
	bool		converged,
				lconv,
				lsub = false,
				skiplimit = false;
	int			iterations,
				lit;

	if (st == NULL || st->n == 0)
		PG_RETURN_NULL();

	fitcxt = AllocSetContextCreate(CurrentMemoryContext, "pareto_nbd_fit",
								   ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(fitcxt);

	/* large data: both fits start from their optimum on a subsample */
	if (BtydSubsample(st, fitcxt, &sub))
	{
		double		sth[4] = {0.0, 0.0, 0.0, 0.0};

		BtydMinimize(4, PnbdObjective, &sub, sth, &fmin, &converged, &iterations);
		if (converged)
			memcpy(theta, sth, sizeof(theta));
		lt[0] = sth[0];
		lt[1] = sth[1];
		lt[2] = sth[2] - sth[3];
		BtydMinimize(3, PnbdLimitObjective, &sub, lt, &lfmin, &lsub, &lit);
		if (converged && lsub)
			skiplimit = PnbdLimitFarBelow(&sub, sth, lt, (double) st->n);
	}
	BgnbdCompress(st, &d);

	BtydMinimize(4, PnbdObjective, &d, theta, &fmin, &converged, &iterations);
	if (converged)
		converged = BtydWellDetermined(4, PnbdObjective, &d, theta, d.wsum);
	for (int i = 0; i < 4; i++)
		vals[i] = exp(theta[i]);
	vals[4] = -fmin * d.wsum;

	if (!(converged && skiplimit))
	{
		if (!lsub)
		{
			lt[0] = theta[0];
			lt[1] = theta[1];
			lt[2] = theta[2] - theta[3];
		}
		BtydMinimize(3, PnbdLimitObjective, &d, lt, &lfmin, &lconv, &lit);
		iterations += lit;
		tol = 1e-12 * fabs(fmin) + 1e-14 * exp(Min(theta[2], theta[3]));
		if (lconv && (!isfinite(fmin) || lfmin <= fmin + tol))
			lconv = BtydWellDetermined(3, PnbdLimitObjective, &d, lt, d.wsum);
		else
			lconv = false;
		if (lconv)
		{
			double		mu = exp(lt[2]);

			vals[0] = exp(lt[0]);
			vals[1] = exp(lt[1]);
			vals[2] = mu <= 1.0 ? BTYD_LIMIT_SCALE : BTYD_LIMIT_SCALE * mu;
			vals[3] = mu <= 1.0 ? BTYD_LIMIT_SCALE / mu : BTYD_LIMIT_SCALE;
			vals[4] = -lfmin * d.wsum;
			converged = true;
		}
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(fitcxt);

	return BtydFitResult(fcinfo, vals, 5, converged, iterations);
}

/* loyalty.pareto_nbd_loglik(x, t_x, t, r, alpha, s, beta) */
PG_FUNCTION_INFO_V1(pareto_nbd_loglik);
Datum
pareto_nbd_loglik(PG_FUNCTION_ARGS)
{
	int32		x = PG_GETARG_INT32(0);
	double		tx = PG_GETARG_FLOAT8(1);
	double		T = PG_GETARG_FLOAT8(2);
	double		r = PG_GETARG_FLOAT8(3);
	double		alpha = PG_GETARG_FLOAT8(4);
	double		s = PG_GETARG_FLOAT8(5);
	double		beta = PG_GETARG_FLOAT8(6);

	BgnbdCheckCustomer(x, tx, T);
	PnbdCheckParams(r, alpha, s, beta);
	if (PnbdAtLimit(s, beta))
		PG_RETURN_FLOAT8(PnbdLimitLoglikRow(x, tx, T, r, alpha, s / beta, NULL, NULL));
	PG_RETURN_FLOAT8(PnbdLoglikRow(x, tx, T, r, alpha, s, beta, NULL, NULL, NULL, NULL));
}

/* loyalty.pareto_nbd_p_alive(x, t_x, t, r, alpha, s, beta) */
PG_FUNCTION_INFO_V1(pareto_nbd_p_alive);
Datum
pareto_nbd_p_alive(PG_FUNCTION_ARGS)
{
	int32		x = PG_GETARG_INT32(0);
	double		tx = PG_GETARG_FLOAT8(1);
	double		T = PG_GETARG_FLOAT8(2);
	double		r = PG_GETARG_FLOAT8(3);
	double		alpha = PG_GETARG_FLOAT8(4);
	double		s = PG_GETARG_FLOAT8(5);
	double		beta = PG_GETARG_FLOAT8(6);

	BgnbdCheckCustomer(x, tx, T);
	PnbdCheckParams(r, alpha, s, beta);
	PG_RETURN_FLOAT8(PnbdPAlive(x, tx, T, r, alpha, s, beta));
}

/* loyalty.pareto_nbd_expected(horizon, x, t_x, t, r, alpha, s, beta) */
PG_FUNCTION_INFO_V1(pareto_nbd_expected);
Datum
pareto_nbd_expected(PG_FUNCTION_ARGS)
{
	double		h = PG_GETARG_FLOAT8(0);
	int32		x = PG_GETARG_INT32(1);
	double		tx = PG_GETARG_FLOAT8(2);
	double		T = PG_GETARG_FLOAT8(3);
	double		r = PG_GETARG_FLOAT8(4);
	double		alpha = PG_GETARG_FLOAT8(5);
	double		s = PG_GETARG_FLOAT8(6);
	double		beta = PG_GETARG_FLOAT8(7);

	BtydCheckHorizon(h);
	BgnbdCheckCustomer(x, tx, T);
	PnbdCheckParams(r, alpha, s, beta);
	PG_RETURN_FLOAT8(PnbdExpected(h, x, tx, T, r, alpha, s, beta));
}
