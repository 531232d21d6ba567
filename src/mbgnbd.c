/*
 * mbgnbd.c — the MBG/NBD model for the scoring component: BG/NBD with a
 * dropout opportunity right after the first purchase too, so that a
 * customer who never came back can be gone (P(alive) < 1 at x = 0).
 * Per-customer likelihood, P(alive) and conditional expectation, and the
 * fitting aggregate loyalty.mbgnbd_fit (rows collected and compressed as
 * for loyalty.bgnbd_fit, optimiser of btyd.c).
 *
 * Reference
 *   [BDF07] Batislam, Denizel & Filiztekin (2007), "Empirical validation
 *           and comparison of models for customer base analysis",
 *           International Journal of Research in Marketing 24(3), 201-209.
 *   [FHL05] as in btyd.c (the BG/NBD expressions MBG/NBD modifies).
 *
 * Model.  Purchases while alive are Poisson(lambda), lambda ~ Gamma(r,
 * alpha); at the first purchase and after every repeat purchase the
 * customer drops out with probability p, p ~ Beta(a, b).  A customer with
 * x repeat purchases has survived x + 1 such coin flips, where BG/NBD
 * counts x.
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "utils/memutils.h"

#include "btyd.h"

/* Check the four MBG/NBD parameters */
static void
MbgnbdCheckParams(double r, double alpha, double a, double b)
{
	BtydCheckParam("r", r);
	BtydCheckParam("alpha", alpha);
	BtydCheckParam("a", a);
	BtydCheckParam("b", b);
}

/*
 * log odds of "dropped out at the last purchase" against "alive" at T,
 *   log[a/(b+x)] + (r+x) [log1p(T/alpha) - log1p(t_x/alpha)],
 * the second term of the likelihood over the first ([BDF07] eq. 4).
 * t_x is 0 when x = 0 (the last purchase is the first one).
 */
static double
MbgnbdDeadLogOdds(int32 x, double tx, double T,
				  double r, double alpha, double a, double b)
{
	if (x == 0)
		tx = 0.0;
	return log(a) - log(b + x)
		+ (r + x) * (BtydLog1pRatio(T, alpha) - BtydLog1pRatio(tx, alpha));
}

/*
 * One customer's log-likelihood, [BDF07] eq. (4):
 *
 *   L = B(a, b+x+1)/B(a, b) G(r+x) alpha^r / (G(r) (alpha+T)^(r+x))
 *     + B(a+1, b+x)/B(a, b) G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x))
 *
 * for every x >= 0 (BG/NBD drops the second term at x = 0), written as
 *   log L = lpoch(r,x) + lpoch(b,x+1) - lpoch(a+b,x+1)
 *         - r log1p(T/alpha) - x log(alpha+T) + log(1 + e^d)
 * with d = MbgnbdDeadLogOdds, since B(a+1, b+x)/B(a, b+x+1) = a/(b+x) and
 * B(a, b+x+1)/B(a, b) = (b)_(x+1)/(a+b)_(x+1).
 */
static double
MbgnbdLoglikRow(int32 x, double tx, double T,
				double r, double alpha, double a, double b)
{
	double		l1T = BtydLog1pRatio(T, alpha);
	double		s;

	return BtydLogPoch(r, x) + BtydLogPoch(b, x + 1.0) - BtydLogPoch(a + b, x + 1.0)
		- r * l1T - x * (log(alpha) + l1T)
		+ BtydSoftplus(MbgnbdDeadLogOdds(x, tx, T, r, alpha, a, b), &s);
}

/*
 * P(alive at T | x, t_x, T) = 1 / (1 + a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x)),
 * [BDF07] eq. (6); below 1 also at x = 0.
 */
static double
MbgnbdPAlive(int32 x, double tx, double T,
			 double r, double alpha, double a, double b)
{
	double		s;

	(void) BtydSoftplus(-MbgnbdDeadLogOdds(x, tx, T, r, alpha, a, b), &s);
	return s;
}

/*
 * Expected purchases in (T, T+t], [BDF07] eq. (5):
 *
 *   E[Y(t)] = P(alive) (a+b+x)/(a-1)
 *             [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x+1; a+b+x; t/(alpha+T+t))]
 *
 * which is P(alive) times the BG/NBD expectation of a new customer, [FHL05]
 * eq. (9), at the posterior parameters (r+x, alpha+T, a, b+x+1): alive at
 * T after x+1 survived coin flips.  BgnbdExpectedNew sums it as a
 * positive series (no 2F1, exact at a = 1).
 */
static double
MbgnbdExpected(double t, int32 x, double tx, double T,
			   double r, double alpha, double a, double b)
{
	if (t <= 0.0)
		return 0.0;
	return MbgnbdPAlive(x, tx, T, r, alpha, a, b)
		* BgnbdExpectedNew(t, r + x, alpha + T, a, b + x + 1.0);
}

/*
 * mbgnbd_fit final.  The transition function is bgnbd_fit_trans (same rows,
 * same checks); the likelihood, its gradient and the boundary a, b ->
 * infinity are BG/NBD's with one more dropout coin flip
 * (BtydFinishDropoutFit, btyd.c, shift 1).
 */
PG_FUNCTION_INFO_V1(mbgnbd_fit_final);
Datum
mbgnbd_fit_final(PG_FUNCTION_ARGS)
{
	BtydState  *st = PG_ARGISNULL(0) ? NULL : (BtydState *) PG_GETARG_POINTER(0);

	if (st == NULL || st->n == 0)
		PG_RETURN_NULL();
	return BtydFinishDropoutFit(fcinfo, st, 1);
}

/* loyalty.mbgnbd_loglik(x, t_x, t, r, alpha, a, b) */
PG_FUNCTION_INFO_V1(mbgnbd_loglik);
Datum
mbgnbd_loglik(PG_FUNCTION_ARGS)
{
	int32		x = PG_GETARG_INT32(0);
	double		tx = PG_GETARG_FLOAT8(1);
	double		T = PG_GETARG_FLOAT8(2);
	double		r = PG_GETARG_FLOAT8(3);
	double		alpha = PG_GETARG_FLOAT8(4);
	double		a = PG_GETARG_FLOAT8(5);
	double		b = PG_GETARG_FLOAT8(6);

	BgnbdCheckCustomer(x, tx, T);
	MbgnbdCheckParams(r, alpha, a, b);
	PG_RETURN_FLOAT8(MbgnbdLoglikRow(x, tx, T, r, alpha, a, b));
}

/* loyalty.mbgnbd_p_alive(x, t_x, t, r, alpha, a, b) */
PG_FUNCTION_INFO_V1(mbgnbd_p_alive);
Datum
mbgnbd_p_alive(PG_FUNCTION_ARGS)
{
	int32		x = PG_GETARG_INT32(0);
	double		tx = PG_GETARG_FLOAT8(1);
	double		T = PG_GETARG_FLOAT8(2);
	double		r = PG_GETARG_FLOAT8(3);
	double		alpha = PG_GETARG_FLOAT8(4);
	double		a = PG_GETARG_FLOAT8(5);
	double		b = PG_GETARG_FLOAT8(6);

	BgnbdCheckCustomer(x, tx, T);
	MbgnbdCheckParams(r, alpha, a, b);
	PG_RETURN_FLOAT8(MbgnbdPAlive(x, tx, T, r, alpha, a, b));
}

/* loyalty.mbgnbd_expected(horizon, x, t_x, t, r, alpha, a, b) */
PG_FUNCTION_INFO_V1(mbgnbd_expected);
Datum
mbgnbd_expected(PG_FUNCTION_ARGS)
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
	MbgnbdCheckParams(r, alpha, a, b);
	PG_RETURN_FLOAT8(MbgnbdExpected(h, x, tx, T, r, alpha, a, b));
}
