/*
 * btyd.c — "buy 'til you die" models for the scoring component: the BG/NBD
 * model of purchase counts and dropout, and the Gamma-Gamma model of spend
 * per transaction.  Per-customer likelihoods and predictions, and the
 * maximum-likelihood fitting aggregates loyalty.bgnbd_fit and
 * loyalty.gamma_gamma_fit.
 *
 * References
 *   [FHL05] Fader, Hardie & Lee (2005), "Counting Your Customers the Easy
 *           Way: An Alternative to the Pareto/NBD Model", Marketing Science
 *           24(2), 275-284.
 *   [FH13]  Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary
 *           Value", brucehardie.com/notes/025.
 *
 * Numerics.  Everything is evaluated in log space.  Gamma-function ratios
 * go through BtydLogPoch (log Pochhammer) so that huge shape parameters
 * never produce inf - inf; the two-term BG/NBD likelihood is combined with
 * a stable softplus (log-sum-exp of two terms).  Time enters only through
 * log1p(v / alpha) and alpha / (alpha + v), so huge scale parameters keep
 * their precision.
 *
 * Fitting.  The aggregates collect (x, t_x, T) or (x, mean value) rows in
 * the aggregate memory context.  The final function sorts a copy, merges
 * identical rows into weighted cells, and maximises the log-likelihood
 * over log-parameters with BFGS (analytic gradients, Armijo backtracking,
 * fixed start at all parameters = 1), so results are deterministic.
 * Gamma-function terms are cached per distinct x and time terms per
 * distinct time value for each evaluation.  A fit reports converged =
 * false when it stops without meeting the gradient test, or when the
 * maximum is not a proper interior one (a parameter not determined by the
 * data, see BtydWellDetermined).
 */
#include "postgres.h"

#include <float.h>
#include <math.h>

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "btyd.h"

/* Optimiser settings (objective = mean negative log-likelihood per row) */
#define BTYD_MAX_ITER		500
#define BTYD_GTOL			1e-9	/* max |gradient| on log-parameters */
#define BTYD_GTOL_STALL		1e-6	/* accepted when no further descent */
#define BTYD_THETA_LIMIT	50.0	/* |log parameter| bound, e^50 ~ 5e21 */
#define BTYD_MAX_STEP		4.0		/* max change of a log parameter/step */
#define BTYD_MAX_PARAMS		4
#define BTYD_MAX_SE			10.0	/* largest acceptable SE of a log parameter */

/* Expected-purchases series: exact terms before block summation */
#define BTYD_EXACT_TERMS	200000
#define BTYD_MAX_BLOCKS		10000000	/* hard stop, never reached in tests */

/* Compressed Gamma-Gamma data */
typedef struct GgData
{
	double	   *w;
	double	   *xm;				/* x * mean value */
	double	   *lterm;			/* log(mean value) + log(x), fixed */
	double		slogm;			/* sum of w log(mean value) */
	int64		ncells;
	BtydGroup  *groups;
	int64		ngroups;
	double		wsum;
} GgData;


/* ------------------------------------------------------------------------
 * Special functions
 * ------------------------------------------------------------------------
 */

/* Digamma psi(x) for x > 0: recurrence up to 6, then asymptotic series */
static double
BtydDigamma(double x)
{
	double		res = 0.0;
	double		f;

	while (x < 6.0)
	{
		res -= 1.0 / x;
		x += 1.0;
	}
	f = 1.0 / (x * x);
	return res + log(x) - 0.5 / x
		- f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f / 132))));
}

/* Stirling correction lgamma(z) - [(z-1/2) log z - z + log(2 pi)/2], z >= 20 */
static double
BtydStirlingTail(double z)
{
	double		f = 1.0 / (z * z);

	return (1.0 / 12 - f * (1.0 / 360 - f / 1260)) / z;
}

/*
 * lgamma(x + u) - lgamma(x + v) for x + u > 0, x + v > 0.  When both
 * arguments are >= 20 the Stirling series is differenced analytically,
 *   (z1 - 1/2) log1p((u-v)/z2) + (u-v)(log z2 - 1) + tail(z1) - tail(z2),
 * so that huge x loses no precision (error < 1e-12 absolute).
 */
static double
BtydLgammaDiff(double x, double u, double v)
{
	double		z1 = x + u,
				z2 = x + v,
				d = u - v,
				lratio;

	if (d == 0.0)
		return 0.0;
	if (z1 < 20.0 || z2 < 20.0)
		return lgamma(z1) - lgamma(z2);
	/* log(z1 / z2) */
	lratio = (fabs(d) < 0.5 * z2) ? log1p(d / z2) : log(z1) - log(z2);
	return (z1 - 0.5) * lratio + d * (log(z2) - 1.0)
		+ BtydStirlingTail(z1) - BtydStirlingTail(z2);
}

/* log Gamma(a + d) - log Gamma(a) for a > 0, d >= 0 */
double
BtydLogPoch(double a, double d)
{
	double		s = 0.0;

	if (d <= 8.0 && d == floor(d))
	{
		for (int j = 0; j < (int) d; j++)
			s += log(a + j);
		return s;
	}
	return BtydLgammaDiff(a, d, 0.0);
}

/* psi(a + d) - psi(a) for a > 0, d >= 0, differenced like BtydLgammaDiff */
double
BtydDigammaDiff(double a, double d)
{
	double		s = 0.0;

	if (d == 0.0)
		return 0.0;
	if (d <= 8.0 && d == floor(d))
	{
		for (int j = 0; j < (int) d; j++)
			s += 1.0 / (a + j);
		return s;
	}
	if (a >= 20.0)
	{
		double		z = a + d;
		double		f1 = 1.0 / (z * z),
					f2 = 1.0 / (a * a);

		return log1p(d / a) - 0.5 / z + 0.5 / a
			- f1 * (1.0 / 12 - f1 * (1.0 / 120 - f1 / 252))
			+ f2 * (1.0 / 12 - f2 * (1.0 / 120 - f2 / 252));
	}
	return BtydDigamma(a + d) - BtydDigamma(a);
}

/* log Beta(u, v), safe when one argument is huge */
static double
BtydLogBeta(double u, double v)
{
	if (u < v)
		return lgamma(u) - BtydLogPoch(v, u);
	return lgamma(v) - BtydLogPoch(u, v);
}

/* log(1 + v/alpha) for v >= 0, alpha > 0, also when v/alpha overflows */
double
BtydLog1pRatio(double v, double alpha)
{
	if (v <= alpha * 1e15)
		return log1p(v / alpha);
	return (log(v) - log(alpha)) + log1p(alpha / v);
}

/* Stable softplus log(1 + e^d), also returning the logistic 1/(1+e^-d) */
double
BtydSoftplus(double d, double *sigmoid)
{
	double		e = exp(-fabs(d));

	if (d >= 0)
	{
		*sigmoid = 1.0 / (1.0 + e);
		return d + log1p(e);
	}
	*sigmoid = e / (1.0 + e);
	return log1p(e);
}

/* ------------------------------------------------------------------------
 * Input validation
 * ------------------------------------------------------------------------
 */

/* Reject a model parameter that is not a positive finite number */
void
BtydCheckParam(const char *name, double v)
{
	if (!(v > 0.0) || isinf(v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("parameter %s must be a positive finite number, got %g", name, v),
				 errhint("Use the parameters returned by the fitting aggregate.")));
}

/* Check the four BG/NBD parameters */
static void
BgnbdCheckParams(double r, double alpha, double a, double b)
{
	BtydCheckParam("r", r);
	BtydCheckParam("alpha", alpha);
	BtydCheckParam("a", a);
	BtydCheckParam("b", b);
}

/* Reject an impossible customer history (x, t_x, T) */
void
BgnbdCheckCustomer(int32 x, double tx, double T)
{
	if (x < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("x must not be negative, got %d", x),
				 errhint("x is the number of repeat purchases.")));
	if (!(T >= 0.0) || isinf(T))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("t must be a non-negative finite number, got %g", T),
				 errhint("t is the time from the first purchase to the end of observation.")));
	if (!(tx >= 0.0) || tx > T)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("t_x must be between 0 and t, got t_x = %g, t = %g", tx, T),
				 errhint("t_x is the time from the first to the last purchase.")));
}

/* Reject an impossible Gamma-Gamma observation */
static void
GgCheckCustomer(int32 x, double m)
{
	if (x < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("x must not be negative, got %d", x),
				 errhint("x is the number of repeat purchases.")));
	if (x > 0 && (!(m > 0.0) || isinf(m)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mean_value must be a positive finite number, got %g", m),
				 errhint("mean_value is the average value of the repeat transactions; leave out customers without positive spend.")));
}

/* ------------------------------------------------------------------------
 * BG/NBD model
 * ------------------------------------------------------------------------
 */

/*
 * One customer's log-likelihood, [FHL05] eq. (6):
 *
 *   L = B(a, b+x)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+T)^(r+x))
 *     + [x > 0] B(a+1, b+x-1)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x))
 *
 * written as  log L = A + log(1 + e^d)  with
 *   A = lpoch(r,x) + lpoch(b,x) - lpoch(a+b,x) - r log1p(T/alpha) - x log(alpha+T)
 *   d = log a - log(b+x-1) - (r+x) (log1p(t_x/alpha) - log1p(T/alpha))
 * since B(a+1, b+x-1)/B(a, b+x) = a/(b+x-1).  t_x is unused when x = 0.
 */
static double
BgnbdLoglikRow(int32 x, double tx, double T,
			   double r, double alpha, double a, double b)
{
	double		l1T = BtydLog1pRatio(T, alpha);
	double		ll;
	double		s;

	ll = BtydLogPoch(r, x) + BtydLogPoch(b, x) - BtydLogPoch(a + b, x)
		- r * l1T - x * (log(alpha) + l1T);
	if (x > 0)
	{
		double		d = log(a) - log(b + (x - 1.0))
			- (r + x) * (BtydLog1pRatio(tx, alpha) - l1T);

		ll += BtydSoftplus(d, &s);
	}
	return ll;
}

/*
 * log of the odds of "dropped out at the last purchase" against "alive":
 * P(alive) = 1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)),
 * the denominator of [FHL05] eq. (10).  Returns -inf when x = 0.
 */
static double
BgnbdDeadLogOdds(int32 x, double tx, double T,
				 double r, double alpha, double a, double b)
{
	if (x == 0)
		return -INFINITY;
	return log(a) - log(b + (x - 1.0))
		+ (r + x) * (BtydLog1pRatio(T, alpha) - BtydLog1pRatio(tx, alpha));
}

/* P(alive at T | x, t_x, T) */
static double
BgnbdPAlive(int32 x, double tx, double T,
			double r, double alpha, double a, double b)
{
	double		s;

	(void) BtydSoftplus(-BgnbdDeadLogOdds(x, tx, T, r, alpha, a, b), &s);
	return s;
}

/* E[(1-p)^s] = (b)_s/(a+b)_s under p ~ Beta(a, b), for real s >= 0 */
static double
BgnbdDropoutMoment(double a, double b, double s)
{
	/*
	 * log[(b)_s/(a+b)_s] = lpoch(b, a) - lpoch(s+b, a) (rounding error ~
	 * a log, and a is never lost in a+b) or lpoch(b, s) - lpoch(a+b, s)
	 * (rounding error ~ s log): take the smaller.
	 */
	if (a <= s)
		return exp(BtydLogPoch(b, a) - BtydLogPoch(s + b, a));
	return exp(BtydLogPoch(b, s) - BtydLogPoch(a + b, s));
}

/* log NB(k; r, z) = log[(r)_k / k!] + r log(1-z) + k log z, for real k >= 0 */
static double
BgnbdLogNB(double k, double r, double lz, double l1z)
{
	double		lc;

	/* difference the two large lgamma terms first */
	if (k >= r)
		lc = BtydLgammaDiff(k, r, 1.0) - lgamma(r);
	else
		lc = BtydLgammaDiff(r, k, 0.0) - lgamma(k + 1.0);
	return lc + r * l1z + k * lz;
}

/*
 * M(s) = sum_{j < s} (b)_j/(a+b)_j, the expected purchases among s purchase
 * opportunities: exact terms first, then blocks of relative width 1/1024
 * summed at their midpoints.  s may be fractional in the last block.
 */
static double
BgnbdDropoutSum(double a, double b, double s)
{
	double		M = 0.0,
				mj = 1.0,
				j;

	/*
	 * Far out, the telescoping closed form M(s) = (c - m(s) (c+s))/(a-1),
	 * c = a+b-1, loses about log10(1/|a-1|) digits; near a = 1 sum.
	 */
	if (s > BTYD_EXACT_TERMS && fabs(a - 1.0) >= 1e-6)
	{
		double		c = a + b - 1.0;
		double		tail = exp(log(BgnbdDropoutMoment(a, b, s)) + log(c + s));

		/* unless the difference cancels (s << b): then sum */
		if (fabs(c - tail) >= 1e-6 * Max(fabs(c), tail))
			return (c - tail) / (a - 1.0);
	}

	for (j = 0.0; j < BTYD_EXACT_TERMS && j + 1.0 <= s; j += 1.0)
	{
		M += mj;
		mj *= (b + j) / (a + b + j);
	}
	while (j < s)
	{
		double		w = Min(Max(1.0, floor(j / 1024.0)), s - j);

		CHECK_FOR_INTERRUPTS();
		M += w * BgnbdDropoutMoment(a, b, j + 0.5 * (w - 1.0));
		j += w;
	}
	return M;
}

/*
 * 1 - rho for the tail bound of the NB sum beyond its mode: rho bounds
 * the term ratio NB(k+1)/NB(k) = z (r+k)/(k+1) from then on, so the rest
 * of the sum is at most NB(k) (M_k/(1-rho) + m_k/(1-rho)^2).  Computed from
 * 1 - z = omz directly, as z rounds to 1 for long horizons.
 */
static double
BgnbdTailGap(double k, double r, double z, double omz)
{
	double		gap_ratio;

	/* (k+1) - z (r+k) = (1-r) + (1-z)(r+k): take the form without cancellation */
	if (z < 0.5)
		gap_ratio = ((k + 1.0) - z * (r + k)) / (k + 1.0);
	else
		gap_ratio = ((1.0 - r) + omz * (r + k)) / (k + 1.0);
	return Min(gap_ratio, omz);
}

/*
 * Expected number of purchases in (0, t] for a customer just acquired,
 * [FHL05] eq. (9):
 *
 *   E[X(t)] = (a+b-1)/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; z)],
 *   z = t/(alpha+t).
 *
 * Eq. (9) is 0/0 at a = 1, loses all precision near a = 1, has alternating
 * terms when a+b < 1 and its series converges slowly as z -> 1.  We sum
 * the same quantity as a positive series instead.  Expanding
 * (1+p t/alpha)^-r = (1-z)^r (1-z(1-p))^-r in eq. (9)'s integral form
 * E[X(t)] = E_p[(1 - (alpha/(alpha+p t))^r)/p] gives
 *
 *   E[X(t)] = sum_{k>=1} NB(k; r, z) M_k,   M_k = sum_{j<k} (b)_j/(a+b)_j,
 *
 * NB(k; r, z) = (r)_k/k! (1-z)^r z^k the negative binomial number of
 * purchase opportunities in (0, t] and M_k the expected purchases among k
 * opportunities with Beta(a, b) dropout (E[(1-p)^j] = (b)_j/(a+b)_j).
 * Every term is positive; no 2F1 is needed.  Terms are summed exactly by
 * recurrence, relative to the NB mode so nothing underflows; when the NB
 * mass lies beyond BTYD_EXACT_TERMS (t/alpha or r huge, z -> 1), the sum
 * continues in blocks of width min(k/1024, max(sd, 1/(1-z))/32), a small
 * fraction of the scale on which the terms vary, evaluated at the block
 * midpoints (relative error about 1e-7).  When r z > 1e8 the NB is too
 * narrow to resolve and E[X(t)] = M at the NB mean (error (sd/mean)^2).
 * Horizons beyond r t/alpha = 1e300 are cut there (for a > 1 the limit
 * (a+b-1)/(a-1) is reached long before).
 */
double
BgnbdExpectedNew(double t, double r, double alpha, double a, double b)
{
	double		lz,
				l1z,
				z,
				mean,
				sd,
				mode,
				lpmode,
				lv,
				omz,
				lscale = 0.0,
				v,
				S = 0.0,
				M = 0.0,
				mj = 1.0,
				k;

	if (t <= 0.0)
		return 0.0;
	/* beyond r t/alpha = 1e300 opportunities the horizon is cut there */
	if (log(r) + log(t) - log(alpha) > 300.0 * M_LN10)
		t = exp(300.0 * M_LN10 + log(alpha) - log(r));
	lz = -BtydLog1pRatio(alpha, t); /* log z */
	l1z = -BtydLog1pRatio(t, alpha);	/* log(1 - z) */
	z = exp(lz);
	mean = exp(log(r) + log(t) - log(alpha));	/* r t / alpha, inf if huge */
	omz = exp(l1z);
	sd = sqrt(mean) * sqrt(1.0 + t / alpha);
	mode = (r > 1.0) ? floor((r - 1.0) * (t / alpha)) : 0.0;
	/* NB too narrow to resolve (r z > 1e8): E = M(mean), rel. error (sd/mean)^2 */
	if (mean > BTYD_EXACT_TERMS && r * z > 1e8)
		return BgnbdDropoutSum(a, b, Min(mean, 1e300));

	lpmode = BgnbdLogNB(mode, r, lz, l1z);
	lv = r * l1z - lpmode;		/* log(NB(0) / NB(mode)) */

	/* exact summation by recurrence: v = NB(k)/NB(mode), M = M_k */
	if (lv > -700.0)
	{
		v = exp(lv);
		for (k = 1.0; k <= BTYD_EXACT_TERMS; k += 1.0)
		{
			v *= z * (r + (k - 1.0)) / k;
			M += mj;
			mj *= (b + (k - 1.0)) / (a + b + (k - 1.0));
			S += v * M;
			if (k > mode)
			{
				double		om = BgnbdTailGap(k, r, z, omz);

				if (om > 0.0 && v * (M * om + mj) <= 1e-17 * S * om * om)
					return S * exp(lpmode);
			}
		}
		M += mj;				/* M_k for the first block */
	}
	else
	{
		k = 1.0;
		M = 1.0;				/* M_1 */
	}

	/* block summation from k on, M = M_k */
	for (int64 step = 0; step < BTYD_MAX_BLOCKS; step++)
	{
		double		w = Max(1.0, floor(Min(k / 1024.0, Max(sd, 1.0 / omz) / 32.0)));
		double		kc = k + 0.5 * (w - 1.0);
		double		lp = BgnbdLogNB(kc, r, lz, l1z) - lpmode;
		double		mblock = BgnbdDropoutMoment(a, b, kc);
		double		Mc = M;

		CHECK_FOR_INTERRUPTS();
		/* M at the block midpoint: M_k + (kc - k) m(k + (kc - k - 1)/2) */
		if (w > 1.0)
			Mc += (kc - k) * BgnbdDropoutMoment(a, b, k + 0.5 * (kc - k - 1.0));
		/* S += w NB(kc) M(kc), relative to e^lscale against overflow */
		S += exp(lp + log(w) + log(Mc) - lscale);
		if (S > 1e250)
		{
			S *= 1e-250;
			lscale += 250.0 * M_LN10;
		}
		M += w * mblock;
		k += w;
		if (kc > mode && kc > mean + 3.0 * sd)
		{
			double		om = BgnbdTailGap(k, r, z, omz);

			if (om > 0.0 &&
				lp + log(M * om + mblock) - 2.0 * log(om) <= log(1e-17 * S) + lscale)
				break;
		}
		if (!isfinite(k) || !isfinite(S))
			break;				/* beyond double range: keep what we have */
	}
	return exp(log(S) + lpmode + lscale);
}

/*
 * Conditional expectation of purchases in (T, T+t], [FHL05] eq. (10).
 * Eq. (10) equals P(alive) times eq. (9) with the posterior parameters
 * (r+x, alpha+T, a, b+x) of a customer known to be alive at T, which is
 * how it is computed here.
 */
static double
BgnbdExpected(double t, int32 x, double tx, double T,
			  double r, double alpha, double a, double b)
{
	if (t <= 0.0)
		return 0.0;
	return BgnbdPAlive(x, tx, T, r, alpha, a, b)
		* BgnbdExpectedNew(t, r + x, alpha + T, a, b + x);
}

/* ------------------------------------------------------------------------
 * Optimiser
 * ------------------------------------------------------------------------
 */

/*
 * Minimise fn over theta[0..n-1] with BFGS on the inverse Hessian,
 * Armijo backtracking and a capped step.  theta holds the start on entry
 * and the minimiser on exit.  Converged means max |gradient| <= BTYD_GTOL,
 * or <= BTYD_GTOL_STALL when descent steps stop changing f (the rounding
 * floor of the objective).
 */
/*
 * The Hessian of fn at theta (g: the gradient there) by forward differences
 * of the analytic gradient (n more evaluations), symmetrised, into A; false
 * when an evaluation was not finite.
 */
static bool
BtydFdHessian(int n, BtydObjective fn, void *arg, const double *theta,
			  const double *g, double A[BTYD_MAX_PARAMS][BTYD_MAX_PARAMS])
{
	double		th[BTYD_MAX_PARAMS],
				g1[BTYD_MAX_PARAMS];
	const double h = 1e-5;
	bool		finite = true;

	for (int j = 0; j < n; j++)
	{
		for (int i = 0; i < n; i++)
			th[i] = theta[i];
		th[j] += h;
		if (!isfinite(fn(th, g1, arg)))
			finite = false;
		for (int i = 0; i < n; i++)
			A[i][j] = (g1[i] - g[i]) / h;
	}
	for (int i = 0; i < n; i++)
		for (int j = 0; j < i; j++)
			A[i][j] = A[j][i] = 0.5 * (A[i][j] + A[j][i]);
	return finite;
}

/* Cholesky factorisation A = L L' in place (L in the lower triangle); false when A is not positive definite */
static bool
BtydCholesky(int n, double A[BTYD_MAX_PARAMS][BTYD_MAX_PARAMS])
{
	for (int j = 0; j < n; j++)
	{
		for (int k = 0; k < j; k++)
			A[j][j] -= A[j][k] * A[j][k];
		if (!(A[j][j] > 0.0))
			return false;
		A[j][j] = sqrt(A[j][j]);
		for (int i = j + 1; i < n; i++)
		{
			for (int k = 0; k < j; k++)
				A[i][j] -= A[i][k] * A[j][k];
			A[i][j] /= A[j][j];
		}
	}
	return true;
}

/*
 * The inverse of the Hessian of fn at theta (g: the gradient there) into H;
 * false when it is not positive definite and finite.
 */
static bool
BtydInverseHessian(int n, BtydObjective fn, void *arg, const double *theta,
				   const double *g, double H[BTYD_MAX_PARAMS][BTYD_MAX_PARAMS])
{
	double		L[BTYD_MAX_PARAMS][BTYD_MAX_PARAMS];

	if (!BtydFdHessian(n, fn, arg, theta, g, L) || !BtydCholesky(n, L))
		return false;
	for (int j = 0; j < n; j++)
		if (!isfinite(L[j][j]))
			return false;
	/* H = A^-1: solve L L' h = e_c for each column c */
	for (int c = 0; c < n; c++)
	{
		double		y[BTYD_MAX_PARAMS];

		for (int i = 0; i < n; i++)
		{
			double		v = (i == c) ? 1.0 : 0.0;

			for (int k = 0; k < i; k++)
				v -= L[i][k] * y[k];
			y[i] = v / L[i][i];
		}
		for (int i = n - 1; i >= 0; i--)
		{
			double		v = y[i];

			for (int k = i + 1; k < n; k++)
				v -= L[k][i] * H[k][c];
			H[i][c] = v / L[i][i];
		}
	}
	return true;
}

static void BtydMinimizeFrom(int n, BtydObjective fn, void *arg, double *theta,
							 double *fmin, bool *converged, int *iterations, bool newton);

void
BtydMinimize(int n, BtydObjective fn, void *arg, double *theta,
			 double *fmin, bool *converged, int *iterations)
{
	BtydMinimizeFrom(n, fn, arg, theta, fmin, converged, iterations, false);
}

/*
 * BtydMinimize from a start near the minimum (a warm start): the first
 * inverse Hessian is the true one there instead of a scaled identity, so
 * the first steps are Newton steps and a few iterations reach the minimum
 * where BFGS would spend a dozen learning the curvature (the parameters are
 * strongly correlated). Falls back to BtydMinimize's start when that
 * Hessian is not positive definite.
 */
void
BtydMinimizeWarm(int n, BtydObjective fn, void *arg, double *theta,
				 double *fmin, bool *converged, int *iterations)
{
	BtydMinimizeFrom(n, fn, arg, theta, fmin, converged, iterations, true);
}

static void
BtydMinimizeFrom(int n, BtydObjective fn, void *arg, double *theta,
				 double *fmin, bool *converged, int *iterations, bool newton)
{
	double		H[BTYD_MAX_PARAMS][BTYD_MAX_PARAMS];
	double		g[BTYD_MAX_PARAMS],
				gn[BTYD_MAX_PARAMS],
				p[BTYD_MAX_PARAMS],
				tn[BTYD_MAX_PARAMS],
				s[BTYD_MAX_PARAMS],
				y[BTYD_MAX_PARAMS],
				Hy[BTYD_MAX_PARAMS];
	double		f,
				fnew = 0.0;
	int			it,
				stalls = 0;

	*converged = false;
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++)
			H[i][j] = (i == j) ? 1.0 : 0.0;
	f = fn(theta, g, arg);
	if (!isfinite(f))
	{
		*fmin = f;
		*iterations = 0;
		return;
	}
	if (newton && !BtydInverseHessian(n, fn, arg, theta, g, H))
	{
		newton = false;
		for (int i = 0; i < n; i++)
			for (int j = 0; j < n; j++)
				H[i][j] = (i == j) ? 1.0 : 0.0;
	}

	for (it = 0; it < BTYD_MAX_ITER; it++)
	{
		double		gmax = 0.0,
					slope = 0.0,
					pmax = 0.0,
					step = 1.0,
					sy = 0.0,
					yHy = 0.0;
		bool		accepted = false;

		CHECK_FOR_INTERRUPTS();
		for (int i = 0; i < n; i++)
			gmax = Max(gmax, fabs(g[i]));
		if (gmax <= BTYD_GTOL)
		{
			*converged = true;
			break;
		}

		/* search direction p = -H g, reset to steepest descent if uphill */
		for (int i = 0; i < n; i++)
		{
			p[i] = 0.0;
			for (int j = 0; j < n; j++)
				p[i] -= H[i][j] * g[j];
			slope += p[i] * g[i];
		}
		if (!(slope < 0.0))
		{
			for (int i = 0; i < n; i++)
			{
				for (int j = 0; j < n; j++)
					H[i][j] = (i == j) ? 1.0 : 0.0;
				p[i] = -g[i];
			}
			slope = 0.0;
			for (int i = 0; i < n; i++)
				slope += p[i] * g[i];
		}
		for (int i = 0; i < n; i++)
			pmax = Max(pmax, fabs(p[i]));
		if (pmax > BTYD_MAX_STEP)
			step = BTYD_MAX_STEP / pmax;

		/* Armijo backtracking, staying inside the parameter box */
		for (int ls = 0; ls < 60; ls++)
		{
			bool		inside = true;

			for (int i = 0; i < n; i++)
			{
				tn[i] = theta[i] + step * p[i];
				if (fabs(tn[i]) > BTYD_THETA_LIMIT)
					inside = false;
			}
			if (inside)
			{
				fnew = fn(tn, gn, arg);
				if (isfinite(fnew) && fnew <= f + 1e-4 * step * slope)
				{
					accepted = true;
					break;
				}
			}
			step *= 0.5;
		}
		if (!accepted)
		{
			/* no descent left: accept only if at the rounding floor */
			*converged = (gmax <= BTYD_GTOL_STALL);
			break;
		}

		/* at the rounding floor: descent steps no longer change f */
		if (f - fnew <= 1e-15 * fabs(f) && gmax <= BTYD_GTOL_STALL)
		{
			if (++stalls >= 3)
			{
				for (int i = 0; i < n; i++)
				{
					theta[i] = tn[i];
					g[i] = gn[i];
				}
				f = fnew;
				*converged = true;
				it++;
				break;
			}
		}
		else
			stalls = 0;

		/* BFGS update of the inverse Hessian */
		for (int i = 0; i < n; i++)
		{
			s[i] = tn[i] - theta[i];
			y[i] = gn[i] - g[i];
			sy += s[i] * y[i];
		}
		if (sy > 1e-12 * sqrt(fabs(f) + 1.0) * DBL_EPSILON)
		{
			if (it == 0 && !newton)
			{
				double		yy = 0.0;

				for (int i = 0; i < n; i++)
					yy += y[i] * y[i];
				for (int i = 0; i < n; i++)
					H[i][i] = sy / yy;
			}
			for (int i = 0; i < n; i++)
			{
				Hy[i] = 0.0;
				for (int j = 0; j < n; j++)
					Hy[i] += H[i][j] * y[j];
				yHy += y[i] * Hy[i];
			}
			for (int i = 0; i < n; i++)
				for (int j = 0; j < n; j++)
					H[i][j] += ((sy + yHy) * s[i] * s[j]) / (sy * sy)
						- (Hy[i] * s[j] + s[i] * Hy[j]) / sy;
		}
		for (int i = 0; i < n; i++)
		{
			theta[i] = tn[i];
			g[i] = gn[i];
		}
		f = fnew;
	}
	*fmin = f;
	*iterations = it;
}

/*
 * Is the maximum a proper interior one?  A log-parameter that runs off
 * towards 0 or infinity (the supremum lies on the boundary, e.g. no repeat
 * purchases at all) still meets the gradient test, so also require the
 * observed information wsum * Hessian (forward differences of the analytic
 * gradient) to exceed 1/BTYD_MAX_SE^2 in every direction: standard errors
 * of the log-parameters at most BTYD_MAX_SE.  Checked by Cholesky.
 */
bool
BtydWellDetermined(int n, BtydObjective fn, void *arg, const double *theta,
				   double wsum)
{
	double		A[BTYD_MAX_PARAMS][BTYD_MAX_PARAMS];
	double		g0[BTYD_MAX_PARAMS];

	(void) fn(theta, g0, arg);
	(void) BtydFdHessian(n, fn, arg, theta, g0, A);
	/* scale to the total information, shift, factorise */
	for (int i = 0; i < n; i++)
		for (int j = 0; j < i; j++)
			A[i][j] = A[j][i] = A[i][j] * wsum;
	for (int i = 0; i < n; i++)
		A[i][i] = A[i][i] * wsum - 1.0 / (BTYD_MAX_SE * BTYD_MAX_SE);
	return BtydCholesky(n, A);
}

/* ------------------------------------------------------------------------
 * BG/NBD fitting
 * ------------------------------------------------------------------------
 */

/* qsort order of rows: x, then T, then t_x */
int
BgnbdRowCmp(const void *pa, const void *pb)
{
	const BgnbdRow *ra = (const BgnbdRow *) pa;
	const BgnbdRow *rb = (const BgnbdRow *) pb;

	if (ra->x != rb->x)
		return (ra->x < rb->x) ? -1 : 1;
	if (ra->T != rb->T)
		return (ra->T < rb->T) ? -1 : 1;
	if (ra->tx != rb->tx)
		return (ra->tx < rb->tx) ? -1 : 1;
	return 0;
}

/*
 * Sort a copy of the rows and merge identical (x, T, t_x) into weighted
 * cells grouped by x, with times replaced by indexes into the sorted
 * distinct time values.  t_x is set to 0 when x = 0 (it is unused there).
 */
void
BgnbdCompress(const BtydState *st, BgnbdData *d)
{
	BgnbdRow   *rows = MemoryContextAllocHuge(CurrentMemoryContext,
											  st->n * sizeof(BgnbdRow));
	double	   *w = MemoryContextAllocHuge(CurrentMemoryContext,
										   st->n * sizeof(double));
	double	   *tv;
	int32	   *iT,
			   *itx;
	int64		nc = 0,
				ng = 0,
				nt = 0;

	memcpy(rows, st->rows, st->n * sizeof(BgnbdRow));
	for (int64 i = 0; i < st->n; i++)
		if (rows[i].x == 0)
			rows[i].tx = 0.0;
	if (!st->sorted)
		BtydSortRows(rows, st->n);
	for (int64 i = 0; i < st->n; i++)
	{
		if (nc > 0 && BgnbdRowCmp(&rows[nc - 1], &rows[i]) == 0)
		{
			w[nc - 1] += 1.0;
			continue;
		}
		rows[nc] = rows[i];
		w[nc++] = 1.0;
	}

	/* distinct time values */
	iT = MemoryContextAllocHuge(CurrentMemoryContext, nc * sizeof(int32));
	itx = MemoryContextAllocHuge(CurrentMemoryContext, nc * sizeof(int32));
	BtydIndexTimes(rows, nc, &tv, &nt, iT, itx);
	d->tv = tv;
	d->ntv = nt;
	d->l1 = MemoryContextAllocHuge(CurrentMemoryContext, nt * sizeof(double));
	d->qv = MemoryContextAllocHuge(CurrentMemoryContext, nt * sizeof(double));

	d->cells = MemoryContextAllocHuge(CurrentMemoryContext, nc * sizeof(BgnbdCell));
	d->ncells = nc;
	d->wsum = 0.0;
	for (int64 i = 0; i < nc; i++)
	{
		d->cells[i].w = w[i];
		d->cells[i].x = rows[i].x;
		d->cells[i].iT = iT[i];
		d->cells[i].itx = itx[i];
		d->wsum += w[i];
		if (i == 0 || rows[i].x != rows[i - 1].x)
			ng++;
	}
	pfree(rows);
	pfree(w);
	pfree(iT);
	pfree(itx);

	d->groups = MemoryContextAllocHuge(CurrentMemoryContext, ng * sizeof(BtydGroup));
	d->ngroups = ng;
	ng = 0;
	for (int64 i = 0; i < nc; i++)
	{
		if (i == 0 || d->cells[i].x != d->cells[i - 1].x)
		{
			if (ng > 0)
				d->groups[ng - 1].end = i;
			d->groups[ng].x = d->cells[i].x;
			d->groups[ng].start = i;
			ng++;
		}
	}
	if (ng > 0)
		d->groups[ng - 1].end = nc;
}

/*
 * The dropout models' mean negative log-likelihood over the cells and its
 * gradient: BG/NBD (shift 0) and MBG/NBD (shift 1) differ only in the
 * number of dropout coin flips a customer with x repeat purchases has
 * survived, k = x + shift (MBG/NBD flips after the first purchase too).
 * Per row, [FHL05] eq. (6) and [BDF07] eq. (4) are both
 *   log L = lpoch(r,x) + lpoch(b,k) - lpoch(a+b,k) - r log1p(T/alpha) - x log(alpha+T)
 *         + [k > 0] softplus(d),  d = log a - log(b+k-1) + (r+x) (log1p(T/alpha) - log1p(t_x/alpha))
 * (B(a+1, b+k-1)/B(a, b+k) = a/(b+k-1)), theta = log(r, alpha, a, b).  With
 * s = 1/(1+e^-d) the weight of the "dropped at the last purchase" term and
 * qv = alpha/(alpha+v), the derivatives are
 *   r dl/dr     = r [psi(r+x) - psi(r) - log1p(T/alpha) + s (log1p(T/alpha) - log1p(t_x/alpha))]
 *   alpha dl/da = r (1 - qT) - x qT - s (r+x) (qtx - qT)
 *   a dl/da     = a [psi(a+b) - psi(a+b+k)] + s
 *   b dl/db     = b [psi(a+b) + psi(b+k) - psi(b) - psi(a+b+k)] - s b/(b+k-1)
 *
 * limit: the boundary a, b -> infinity with p = a/(a+b) fixed (everyone
 * drops out with the same probability p: no heterogeneity in dropout),
 * theta = (log r, log alpha, logit p).  B(a, b+k)/B(a, b) -> (1-p)^k and
 * a/(b+k-1) -> p/(1-p), so
 *   log L = lpoch(r,x) + k log(1-p) - ... + [k > 0] softplus(d),  d = logit p + (r+x) (...)
 *   dl/dlogit p = -k p + s
 * Gamma-function terms are computed once per x, time terms once per
 * distinct time value.
 */
static double
BtydDropoutObjective(const double *theta, double *grad, const BgnbdData *d,
					 int shift, bool limit)
{
	double		r = exp(theta[0]),
				alpha = exp(theta[1]),
				lalpha = log(alpha);
	double		a = 0.0,
				b = 0.0,
				loga = 0.0,
				p = 0.0,
				log1mp = 0.0;
	double		ll = 0.0,
				gr = 0.0,
				gal = 0.0,
				ga = 0.0,
				gb = 0.0;

	if (limit)
		log1mp = -BtydSoftplus(theta[2], &p);	/* log(1-p), p = 1/(1+e^-theta) */
	else
	{
		a = exp(theta[2]);
		b = exp(theta[3]);
		loga = log(a);
	}

	for (int64 i = 0; i < d->ntv; i++)
	{
		d->l1[i] = BtydLog1pRatio(d->tv[i], alpha);
		d->qv[i] = alpha / (alpha + d->tv[i]);
	}

	for (int64 gi = 0; gi < d->ngroups; gi++)
	{
		const BtydGroup *g = &d->groups[gi];
		int32		x = g->x;
		double		k = x + (double) shift;
		double		rx = r + x;
		double		dr = BtydDigammaDiff(r, x);
		double		cconst,
					dconst = 0.0,
					da = 0.0,
					db = 0.0;
		double		sw = 0.0,	/* sum of weights */
					sl1 = 0.0,	/* sum w log1p(T/alpha) */
					sq = 0.0,	/* sum w qT */
					ssp = 0.0,	/* sum w softplus(d) */
					ss = 0.0,	/* sum w s */
					ssl = 0.0,	/* sum w s (l1T - l1tx) */
					ssq = 0.0;	/* sum w s (qtx - qT) */

		if (limit)
		{
			cconst = BtydLogPoch(r, x) + k * log1mp;
			dconst = theta[2];
		}
		else
		{
			cconst = BtydLogPoch(r, x) + BtydLogPoch(b, k) - BtydLogPoch(a + b, k);
			da = -BtydDigammaDiff(a + b, k);
			db = BtydDigammaDiff(b, k) - BtydDigammaDiff(a + b, k);
			if (k > 0)
				dconst = loga - log(b + (k - 1.0));
		}

		if (k == 0)
		{
			/* BG/NBD one-time buyers: no dropout term */
			for (int64 i = g->start; i < g->end; i++)
			{
				const BgnbdCell *c = &d->cells[i];

				sw += c->w;
				sl1 += c->w * d->l1[c->iT];
				sq += c->w * d->qv[c->iT];
			}
		}
		else
		{
			for (int64 i = g->start; i < g->end; i++)
			{
				const BgnbdCell *c = &d->cells[i];
				double		l1T = d->l1[c->iT];
				double		dl = l1T - d->l1[c->itx];
				double		s;
				double		sp = BtydSoftplus(dconst + rx * dl, &s);

				sw += c->w;
				sl1 += c->w * l1T;
				sq += c->w * d->qv[c->iT];
				ssp += c->w * sp;
				ss += c->w * s;
				ssl += c->w * s * dl;
				ssq += c->w * s * (d->qv[c->itx] - d->qv[c->iT]);
			}
		}
		ll += sw * (cconst - x * lalpha) - rx * sl1 + ssp;
		gr += r * (sw * dr - sl1 + ssl);
		gal += r * (sw - sq) - x * sq - rx * ssq;
		if (limit)
			ga += -k * p * sw + ss;
		else
		{
			ga += a * sw * da + ss;
			if (k > 0)
				gb += b * sw * db - ss * b / (b + (k - 1.0));
		}
	}
	grad[0] = -gr / d->wsum;
	grad[1] = -gal / d->wsum;
	grad[2] = -ga / d->wsum;
	if (!limit)
		grad[3] = -gb / d->wsum;
	return -ll / d->wsum;
}

/* The four objectives BtydFinishDropoutFit minimises */
static double
BgnbdObjective(const double *theta, double *grad, void *arg)
{
	return BtydDropoutObjective(theta, grad, (const BgnbdData *) arg, 0, false);
}

static double
BgnbdLimitObjective(const double *theta, double *grad, void *arg)
{
	return BtydDropoutObjective(theta, grad, (const BgnbdData *) arg, 0, true);
}

static double
MbgnbdObjective(const double *theta, double *grad, void *arg)
{
	return BtydDropoutObjective(theta, grad, (const BgnbdData *) arg, 1, false);
}

static double
MbgnbdLimitObjective(const double *theta, double *grad, void *arg)
{
	return BtydDropoutObjective(theta, grad, (const BgnbdData *) arg, 1, true);
}

/*
 * The final function of bgnbd_fit (shift 0) and mbgnbd_fit (shift 1):
 * compress the rows, maximise the likelihood over (r, alpha, a, b), and
 * return parameters, log-likelihood and diagnostics.
 *
 * A maximum on the boundary a, b -> infinity (both beyond
 * BTYD_BOUNDARY_AB, not an interior maximum): dropout without
 * heterogeneity, which is a model (the limit above), not a failure.  Its
 * three parameters (r, alpha, p) are then fitted; when that maximum is an
 * interior one and at least as good, the fit is converged and reports the
 * limit as min(a, b) = S = BTYD_LIMIT_SCALE exactly and the other S times
 * the odds, so a/(a+b) = p, at which the per-customer functions equal the
 * limit's to about x/S.  loglik is the limit's.
 */
Datum
BtydFinishDropoutFit(FunctionCallInfo fcinfo, BtydState *st, int shift)
{
	BtydObjective objective = shift ? MbgnbdObjective : BgnbdObjective;
	BtydObjective limitobj = shift ? MbgnbdLimitObjective : BgnbdLimitObjective;
	MemoryContext fitcxt,
				oldcxt;
	BgnbdData	d;
	double		start[4],
			   *startp;
	double		theta[4] = {0.0, 0.0, 0.0, 0.0};
	double		vals[5];
	double		fmin;
	bool		converged;
	int			iterations;
	int			warm_iterations;

	fitcxt = AllocSetContextCreate(CurrentMemoryContext, "btyd dropout fit",
								   ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(fitcxt);
	BgnbdCompress(st, &d);

	/*
	 * A warm start is kept only when it reaches a well-determined interior
	 * maximum. From a point on the boundary (an earlier fit of the limit)
	 * the likelihood is flat in a and b and the optimiser stays there even
	 * when the data now have an interior maximum: then the usual start.
	 */
	converged = false;
	warm_iterations = 0;
	if (st->nstart == 4)
	{
		for (int i = 0; i < 4; i++)
			theta[i] = log(st->start[i]);
		BtydMinimizeWarm(4, objective, &d, theta, &fmin, &converged, &warm_iterations);
		if (converged)
			converged = BtydWellDetermined(4, objective, &d, theta, d.wsum);
		iterations = warm_iterations;
	}
	if (!converged)
	{
		startp = BtydSubsampleStart(st, objective, fitcxt, start);
		for (int i = 0; i < 4; i++)
			theta[i] = (startp != NULL) ? startp[i] : 0.0;
		/* a subsample's optimum is a warm start too: Newton steps from it */
		if (startp != NULL)
			BtydMinimizeWarm(4, objective, &d, theta, &fmin, &converged, &iterations);
		else
			BtydMinimize(4, objective, &d, theta, &fmin, &converged, &iterations);
		if (converged)
			converged = BtydWellDetermined(4, objective, &d, theta, d.wsum);
		iterations += warm_iterations;
	}
	for (int i = 0; i < 4; i++)
		vals[i] = exp(theta[i]);
	vals[4] = -fmin * d.wsum;

	if (!converged && isfinite(fmin) &&
		theta[2] > log(BTYD_BOUNDARY_AB) && theta[3] > log(BTYD_BOUNDARY_AB))
	{
		/* from the boundary point: logit p = log(a/b) */
		double		lt[3] = {theta[0], theta[1], theta[2] - theta[3]};
		double		lfmin;
		bool		lconv;
		int			lit;

		BtydMinimize(3, limitobj, &d, lt, &lfmin, &lconv, &lit);
		if (lconv)
			lconv = BtydWellDetermined(3, limitobj, &d, lt, d.wsum);
		if (lconv && lfmin <= fmin + 1e-12 * fabs(fmin))
		{
			double		p,
						q;

			(void) BtydSoftplus(lt[2], &p);
			(void) BtydSoftplus(-lt[2], &q);	/* 1 - p without cancellation */
			vals[0] = exp(lt[0]);
			vals[1] = exp(lt[1]);
			/* the smaller of a, b exactly S, the other S times the odds */
			vals[2] = p <= q ? BTYD_LIMIT_SCALE : BTYD_LIMIT_SCALE * (p / q);
			vals[3] = p <= q ? BTYD_LIMIT_SCALE * (q / p) : BTYD_LIMIT_SCALE;
			vals[4] = -lfmin * d.wsum;
			converged = true;
		}
		iterations += lit;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(fitcxt);

	return BtydFitResult(fcinfo, vals, 5, converged, iterations);
}

/* Append one row to the aggregate state, growing it geometrically */
BtydState *
BtydStateAppend(FunctionCallInfo fcinfo, BtydState *st, Size rowsize,
				const void *row)
{
	MemoryContext aggcontext;

	if (!AggCheckCallContext(fcinfo, &aggcontext))
		elog(ERROR, "btyd fitting transition function called in non-aggregate context");
	if (st == NULL)
	{
		st = MemoryContextAllocZero(aggcontext, sizeof(BtydState));
		st->n = 0;
		st->cap = 1024;
		st->rowsize = rowsize;
		st->rows = MemoryContextAllocHuge(aggcontext, st->cap * rowsize);
	}
	if (st->n == st->cap)
	{
		st->cap *= 2;
		st->rows = repalloc_huge(st->rows, st->cap * rowsize);
	}
	memcpy(st->rows + st->n * rowsize, row, rowsize);
	st->n++;
	st->sorted = false;
	return st;
}

/*
 * A fitting aggregate's warm start: argument argno of the transition call
 * (float8[] of the np parameters, as the fit reports them), kept in the
 * state the transition returned (the first row's; every row carries the
 * same). The optimiser then starts there instead of from every parameter
 * 1.0 or a subsample's optimum: a refit after a few new rows takes a few
 * passes over the data instead of twenty. NULL: no warm start.
 */
void
BtydStateSetStart(FunctionCallInfo fcinfo, Datum state, int argno, int np)
{
	BtydState  *st = (BtydState *) DatumGetPointer(state);
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (fcinfo->isnull || st == NULL || st->nstart > 0 || PG_ARGISNULL(argno))
		return;
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		n = -1;
	else
	{
		deconstruct_array(arr, FLOAT8OID, sizeof(float8), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
						  &elems, &nulls, &n);
		for (int i = 0; i < n && n == np; i++)
			if (nulls[i] || !isfinite(DatumGetFloat8(elems[i])) || !(DatumGetFloat8(elems[i]) > 0.0))
				n = -1;
	}
	if (n != np)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("start must be an array of %d positive finite parameters", np),
				 errhint("Pass the parameters of an earlier fit in the order the fit returns them, or NULL.")));
	for (int i = 0; i < np; i++)
		st->start[i] = DatumGetFloat8(elems[i]);
	st->nstart = np;
}

/* Build the composite result of a fitting aggregate */
Datum
BtydFitResult(FunctionCallInfo fcinfo, const double *vals, int nvals,
			  bool converged, int iterations)
{
	TupleDesc	tupdesc;
	Datum		values[BTYD_MAX_PARAMS + 3];
	bool		nulls[BTYD_MAX_PARAMS + 3] = {0};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);
	if (tupdesc->natts != nvals + 2)
		elog(ERROR, "unexpected result row type");
	for (int i = 0; i < nvals; i++)
		values[i] = Float8GetDatum(vals[i]);
	values[nvals] = BoolGetDatum(converged);
	values[nvals + 1] = Int32GetDatum(iterations);
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/*
 * bgnbd_fit(x int, t_x float8, t float8) transition: validate and collect.
 * Rows with a NULL column are skipped, like other aggregates do.
 */
PG_FUNCTION_INFO_V1(bgnbd_fit_trans);
Datum
bgnbd_fit_trans(PG_FUNCTION_ARGS)
{
	BtydState  *st = PG_ARGISNULL(0) ? NULL : (BtydState *) PG_GETARG_POINTER(0);
	BgnbdRow	row = {0};

	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
	{
		if (st == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(st);
	}
	row.x = PG_GETARG_INT32(1);
	row.tx = PG_GETARG_FLOAT8(2);
	row.T = PG_GETARG_FLOAT8(3);
	BgnbdCheckCustomer(row.x, row.tx, row.T);
	PG_RETURN_POINTER(BtydStateAppend(fcinfo, st, sizeof(BgnbdRow), &row));
}

/* bgnbd_fit(x, t_x, t, start float8[]) transition: bgnbd_fit's, and the warm start */
PG_FUNCTION_INFO_V1(bgnbd_fit_start_trans);
Datum
bgnbd_fit_start_trans(PG_FUNCTION_ARGS)
{
	Datum		st = bgnbd_fit_trans(fcinfo);

	BtydStateSetStart(fcinfo, st, 4, 4);
	return st;
}

/* bgnbd_fit final: compress, maximise the likelihood, return the row */
/*
 * The end both fits share: minimise from log-parameters 0 (every parameter
 * 1.0) with the compressed data, check that the optimum is well determined,
 * and return parameters, log-likelihood and diagnostics. fitcxt holds the
 * compressed data and is deleted here.
 */
Datum
BtydFinishFit(FunctionCallInfo fcinfo, int np, BtydObjective objective, void *data,
			  double wsum, MemoryContext fitcxt)
{
	return BtydFinishFitFrom(fcinfo, np, objective, data, wsum, fitcxt, NULL);
}

/*
 * BtydFinishFit from log-parameters start[] (an earlier fit's), with Newton
 * steps (BtydMinimizeWarm). The warm start is kept only when it reaches a
 * well-determined maximum; otherwise the fit runs from the usual start and
 * reports that run's iterations. start NULL: the usual start.
 */
Datum
BtydFinishFitFrom(FunctionCallInfo fcinfo, int np, BtydObjective objective, void *data,
				  double wsum, MemoryContext fitcxt, const double *start)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(fitcxt);
	double		theta[4] = {0.0, 0.0, 0.0, 0.0};
	double		vals[5];
	double		fmin;
	bool		converged = false;
	int			iterations;

	Assert(np <= 4);
	if (start != NULL)
	{
		for (int i = 0; i < np; i++)
			theta[i] = start[i];
		BtydMinimizeWarm(np, objective, data, theta, &fmin, &converged, &iterations);
		if (converged)
			converged = BtydWellDetermined(np, objective, data, theta, wsum);
	}
	if (!converged)
	{
		for (int i = 0; i < np; i++)
			theta[i] = 0.0;
		BtydMinimize(np, objective, data, theta, &fmin, &converged, &iterations);
		if (converged)
			converged = BtydWellDetermined(np, objective, data, theta, wsum);
	}
	for (int i = 0; i < np; i++)
		vals[i] = exp(theta[i]);
	vals[np] = -fmin * wsum;
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(fitcxt);

	return BtydFitResult(fcinfo, vals, np + 1, converged, iterations);
}

PG_FUNCTION_INFO_V1(bgnbd_fit_final);
Datum
bgnbd_fit_final(PG_FUNCTION_ARGS)
{
	BtydState  *st = PG_ARGISNULL(0) ? NULL : (BtydState *) PG_GETARG_POINTER(0);

	if (st == NULL || st->n == 0)
		PG_RETURN_NULL();
	return BtydFinishDropoutFit(fcinfo, st, 0);
}

/* loyalty.bgnbd_loglik(x, t_x, t, r, alpha, a, b) */
PG_FUNCTION_INFO_V1(bgnbd_loglik);
Datum
bgnbd_loglik(PG_FUNCTION_ARGS)
{
	int32		x = PG_GETARG_INT32(0);
	double		tx = PG_GETARG_FLOAT8(1);
	double		T = PG_GETARG_FLOAT8(2);
	double		r = PG_GETARG_FLOAT8(3);
	double		alpha = PG_GETARG_FLOAT8(4);
	double		a = PG_GETARG_FLOAT8(5);
	double		b = PG_GETARG_FLOAT8(6);

	BgnbdCheckCustomer(x, tx, T);
	BgnbdCheckParams(r, alpha, a, b);
	PG_RETURN_FLOAT8(BgnbdLoglikRow(x, tx, T, r, alpha, a, b));
}

/* loyalty.bgnbd_p_alive(x, t_x, t, r, alpha, a, b) */
PG_FUNCTION_INFO_V1(bgnbd_p_alive);
Datum
bgnbd_p_alive(PG_FUNCTION_ARGS)
{
	int32		x = PG_GETARG_INT32(0);
	double		tx = PG_GETARG_FLOAT8(1);
	double		T = PG_GETARG_FLOAT8(2);
	double		r = PG_GETARG_FLOAT8(3);
	double		alpha = PG_GETARG_FLOAT8(4);
	double		a = PG_GETARG_FLOAT8(5);
	double		b = PG_GETARG_FLOAT8(6);

	BgnbdCheckCustomer(x, tx, T);
	BgnbdCheckParams(r, alpha, a, b);
	PG_RETURN_FLOAT8(BgnbdPAlive(x, tx, T, r, alpha, a, b));
}

/* Reject a negative, infinite or NaN forecast horizon */
void
BtydCheckHorizon(double h)
{
	if (!(h >= 0.0) || isinf(h))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("horizon must be a non-negative finite number, got %g", h),
				 errhint("The horizon is a length of time in the unit used for fitting.")));
}

/* loyalty.bgnbd_expected(horizon, x, t_x, t, r, alpha, a, b) */
PG_FUNCTION_INFO_V1(bgnbd_expected);
Datum
bgnbd_expected(PG_FUNCTION_ARGS)
{
	double		h = PG_GETARG_FLOAT8(0);
	int32		x = PG_GETARG_INT32(1);
	double		tx = PG_GETARG_FLOAT8(2);
	double		T = PG_GETARG_FLOAT8(3);
	double		r = PG_GETARG_FLOAT8(4);
	double		alpha = PG_GETARG_FLOAT8(5);
	double		a = PG_GETARG_FLOAT8(6);
	double		b = PG_GETARG_FLOAT8(7);

	BtydCheckHorizon(h);
	BgnbdCheckCustomer(x, tx, T);
	BgnbdCheckParams(r, alpha, a, b);
	PG_RETURN_FLOAT8(BgnbdExpected(h, x, tx, T, r, alpha, a, b));
}

/* loyalty.bgnbd_expected_new(horizon, r, alpha, a, b) */
PG_FUNCTION_INFO_V1(bgnbd_expected_new);
Datum
bgnbd_expected_new(PG_FUNCTION_ARGS)
{
	double		h = PG_GETARG_FLOAT8(0);
	double		r = PG_GETARG_FLOAT8(1);
	double		alpha = PG_GETARG_FLOAT8(2);
	double		a = PG_GETARG_FLOAT8(3);
	double		b = PG_GETARG_FLOAT8(4);

	BtydCheckHorizon(h);
	BgnbdCheckParams(r, alpha, a, b);
	PG_RETURN_FLOAT8(BgnbdExpectedNew(h, r, alpha, a, b));
}

/* ------------------------------------------------------------------------
 * Gamma-Gamma model
 * ------------------------------------------------------------------------
 */

/*
 * One repeat buyer's log-likelihood of the mean value m of x transactions,
 * [FH13] eq. (4), the marginal density of z-bar:
 *
 *   f(m | p, q, gamma, x) = G(px+q)/(G(px) G(q)) gamma^q m^(px-1) x^px
 *                           / (gamma + x m)^(px+q)
 *
 * written as -lbeta(px, q) + (px-1) log m + px log x - px log gamma
 *            - (px+q) log1p(x m / gamma).
 */
static double
GgLoglikRow(int32 x, double m, double p, double q, double gamma)
{
	double		px = p * x;

	return -BtydLogBeta(px, q) + (px - 1.0) * log(m) + px * log((double) x)
		- px * log(gamma) - (px + q) * BtydLog1pRatio(x * m, gamma);
}

/* Check the three Gamma-Gamma parameters */
static void
GgCheckParams(double p, double q, double gamma)
{
	BtydCheckParam("p", p);
	BtydCheckParam("q", q);
	BtydCheckParam("gamma", gamma);
}

/* qsort order of Gamma-Gamma rows: x, then m */
int
GgRowCmp(const void *pa, const void *pb)
{
	const GgRow *ra = (const GgRow *) pa;
	const GgRow *rb = (const GgRow *) pb;

	if (ra->x != rb->x)
		return (ra->x < rb->x) ? -1 : 1;
	if (ra->m != rb->m)
		return (ra->m < rb->m) ? -1 : 1;
	return 0;
}

/* Sort a copy of the rows, merge identical (x, m), group by x */
static void
GgCompress(const BtydState *st, GgData *d)
{
	GgRow	   *rows = MemoryContextAllocHuge(CurrentMemoryContext,
										  st->n * sizeof(GgRow));
	int64		nc = 0,
				ng = 0;

	memcpy(rows, st->rows, st->n * sizeof(GgRow));
	if (!st->sorted)
		BtydSortGgRows(rows, st->n);
	d->w = MemoryContextAllocHuge(CurrentMemoryContext, st->n * sizeof(double));
	for (int64 i = 0; i < st->n; i++)
	{
		if (nc > 0 && GgRowCmp(&rows[nc - 1], &rows[i]) == 0)
		{
			d->w[nc - 1] += 1.0;
			continue;
		}
		rows[nc] = rows[i];
		d->w[nc++] = 1.0;
	}
	d->ncells = nc;
	d->xm = MemoryContextAllocHuge(CurrentMemoryContext, nc * sizeof(double));
	d->lterm = MemoryContextAllocHuge(CurrentMemoryContext, nc * sizeof(double));
	d->wsum = 0.0;
	d->slogm = 0.0;
	for (int64 i = 0; i < nc; i++)
	{
		d->xm[i] = rows[i].x * rows[i].m;
		d->lterm[i] = log(rows[i].m) + log((double) rows[i].x);
		d->wsum += d->w[i];
		d->slogm += d->w[i] * log(rows[i].m);
		if (i == 0 || rows[i].x != rows[i - 1].x)
			ng++;
	}
	d->groups = MemoryContextAllocHuge(CurrentMemoryContext, ng * sizeof(BtydGroup));
	d->ngroups = ng;
	ng = 0;
	for (int64 i = 0; i < nc; i++)
	{
		if (i == 0 || rows[i].x != rows[i - 1].x)
		{
			if (ng > 0)
				d->groups[ng - 1].end = i;
			d->groups[ng].x = rows[i].x;
			d->groups[ng].start = i;
			ng++;
		}
	}
	if (ng > 0)
		d->groups[ng - 1].end = nc;
	pfree(rows);
}

/*
 * Mean negative Gamma-Gamma log-likelihood ([FH13] eq. 4) and its gradient
 * in theta = log(p, q, gamma).  With L = log1p(x m / gamma):
 *   p dl/dp = p x [psi(px+q) - psi(px) + log m + log x - log gamma - L]
 *   q dl/dq = q [psi(px+q) - psi(q) - L]
 *   gamma dl/dgamma = (px+q) x m/(gamma + x m) - px
 * The -log m term of the density is included, so the value matches the
 * published log-likelihood.
 */
static double
GgObjective(const double *theta, double *grad, void *arg)
{
	GgData	   *d = (GgData *) arg;
	double		p = exp(theta[0]),
				q = exp(theta[1]),
				gamma = exp(theta[2]),
				lgam = log(gamma);
	double		ll = 0.0,
				gp = 0.0,
				gq = 0.0,
				gg = 0.0;

	for (int64 gi = 0; gi < d->ngroups; gi++)
	{
		const BtydGroup *g = &d->groups[gi];
		double		x = g->x;
		double		px = p * x;
		double		cconst = -BtydLogBeta(px, q) - px * lgam;
		double		dpsi_p = BtydDigammaDiff(px, q);
		double		dpsi_q = BtydDigammaDiff(q, px);
		double		sw = 0.0,
					slt = 0.0,	/* sum w (log m + log x) */
					sL = 0.0,	/* sum w L */
					sf = 0.0;	/* sum w x m / (gamma + x m) */

		for (int64 i = g->start; i < g->end; i++)
		{
			double		w = d->w[i];
			double		L = BtydLog1pRatio(d->xm[i], gamma);

			sw += w;
			slt += w * d->lterm[i];
			sL += w * L;
			sf += w / (1.0 + gamma / d->xm[i]);	/* x m / (gamma + x m) */
		}
		/* (px - 1) log m + px log x = px (log m + log x) - log m */
		ll += sw * cconst + px * slt - (px + q) * sL;
		gp += px * (sw * (dpsi_p - lgam) + slt - sL);
		gq += q * (sw * dpsi_q - sL);
		gg += (px + q) * sf - px * sw;
	}
	ll -= d->slogm;				/* constant: sum w log m */
	grad[0] = -gp / d->wsum;
	grad[1] = -gq / d->wsum;
	grad[2] = -gg / d->wsum;
	return -ll / d->wsum;
}

/*
 * gamma_gamma_fit(x int, mean_value float8) transition.  Only repeat
 * buyers carry information on spend: rows with x = 0 are skipped (as in
 * the published fit), as are rows with a NULL column; a repeat buyer with
 * mean_value <= 0 is an error.
 */
PG_FUNCTION_INFO_V1(gamma_gamma_fit_trans);
Datum
gamma_gamma_fit_trans(PG_FUNCTION_ARGS)
{
	BtydState  *st = PG_ARGISNULL(0) ? NULL : (BtydState *) PG_GETARG_POINTER(0);
	GgRow		row = {0};

	if (!PG_ARGISNULL(1) && !PG_ARGISNULL(2))
	{
		row.x = PG_GETARG_INT32(1);
		row.m = PG_GETARG_FLOAT8(2);
		GgCheckCustomer(row.x, row.m);
		if (row.x > 0)
			PG_RETURN_POINTER(BtydStateAppend(fcinfo, st, sizeof(GgRow), &row));
	}
	if (st == NULL)
		PG_RETURN_NULL();
	PG_RETURN_POINTER(st);
}

/* gamma_gamma_fit final: compress, maximise the likelihood, return the row */
PG_FUNCTION_INFO_V1(gamma_gamma_fit_final);
Datum
gamma_gamma_fit_final(PG_FUNCTION_ARGS)
{
	BtydState  *st = PG_ARGISNULL(0) ? NULL : (BtydState *) PG_GETARG_POINTER(0);
	MemoryContext fitcxt,
				oldcxt;
	GgData		d;

	if (st == NULL || st->n == 0)
		PG_RETURN_NULL();

	fitcxt = AllocSetContextCreate(CurrentMemoryContext, "gamma_gamma_fit",
								   ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(fitcxt);
	GgCompress(st, &d);
	MemoryContextSwitchTo(oldcxt);
	if (st->nstart == 3)
	{
		double		start[3];

		for (int i = 0; i < 3; i++)
			start[i] = log(st->start[i]);
		return BtydFinishFitFrom(fcinfo, 3, GgObjective, &d, d.wsum, fitcxt, start);
	}
	return BtydFinishFit(fcinfo, 3, GgObjective, &d, d.wsum, fitcxt);
}

/* gamma_gamma_fit(x, mean_value, start float8[]) transition: gamma_gamma_fit's, and the warm start */
PG_FUNCTION_INFO_V1(gamma_gamma_fit_start_trans);
Datum
gamma_gamma_fit_start_trans(PG_FUNCTION_ARGS)
{
	Datum		st = gamma_gamma_fit_trans(fcinfo);

	BtydStateSetStart(fcinfo, st, 3, 3);
	return st;
}

/* loyalty.gamma_gamma_loglik(x, mean_value, p, q, gamma) */
PG_FUNCTION_INFO_V1(gamma_gamma_loglik);
Datum
gamma_gamma_loglik(PG_FUNCTION_ARGS)
{
	int32		x = PG_GETARG_INT32(0);
	double		m = PG_GETARG_FLOAT8(1);
	double		p = PG_GETARG_FLOAT8(2);
	double		q = PG_GETARG_FLOAT8(3);
	double		gamma = PG_GETARG_FLOAT8(4);

	GgCheckCustomer(x, m);
	GgCheckParams(p, q, gamma);
	if (x == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("x must be positive for the gamma-gamma likelihood"),
				 errhint("Customers without repeat purchases carry no spend information.")));
	PG_RETURN_FLOAT8(GgLoglikRow(x, m, p, q, gamma));
}

/*
 * loyalty.gamma_gamma_mean(x, mean_value, p, q, gamma): expected spend per
 * transaction given x repeat transactions averaging mean_value, [FH13]
 * eq. (5):
 *
 *   E(Z | p, q, gamma, m, x) = p (gamma + x m) / (p x + q - 1),
 *
 * a weighted average of the population mean p gamma/(q-1) and m.  With
 * x = 0 it is the population mean and mean_value is ignored.  The
 * expectation is infinite unless p x + q > 1.
 */
PG_FUNCTION_INFO_V1(gamma_gamma_mean);
Datum
gamma_gamma_mean(PG_FUNCTION_ARGS)
{
	int32		x = PG_GETARG_INT32(0);
	double		m = PG_GETARG_FLOAT8(1);
	double		p = PG_GETARG_FLOAT8(2);
	double		q = PG_GETARG_FLOAT8(3);
	double		gamma = PG_GETARG_FLOAT8(4);
	double		denom;

	GgCheckCustomer(x, m);
	GgCheckParams(p, q, gamma);
	if (x == 0)
		m = 0.0;
	denom = p * x + q - 1.0;
	if (!(denom > 0.0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expected spend is infinite when p * x + q <= 1"),
				 errhint("The population mean spend exists only for q > 1.")));
	/* p (gamma + x m) / denom, scaled so huge gamma or m cannot overflow early */
	PG_RETURN_FLOAT8(p * (gamma / denom) + p * ((x * m) / denom));
}
