/*
 * journey_dates.c — the dates of the journeys' per-customer occasions that
 * enqueue_due computes for every customer once a day (the first run after a
 * UTC midnight), as one C call per row rather than a dozen SQL expressions:
 *
 *   loyalty._reorder_at(): the UTC midnight from which a reorder reminder is
 *   due: at or after last order + factor * (last - first) / (purchase days - 1).
 *
 *   loyalty._lapse_at(): the first UTC day on which loyalty._p_alive() falls
 *   below a threshold (the win-back lapse).
 *
 * P(alive) only falls while a customer does not buy, and it is evaluated per
 * whole UTC day (days since the first purchase day, T, or since the last
 * one, d), so the crossing can be solved for:
 *
 *   BG/NBD [FHL05, eq. 13], x = purchase days - 1 > 0, t_x = last - first day:
 *     P(alive) = 1 / (1 + a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)) < theta
 *     <=>  T > T* = (alpha+t_x) * ((1/theta - 1)(b+x-1)/a)^(1/(r+x)) - alpha
 *   so the first such day is T = floor(T*) + 1, and never before the last
 *   purchase day (T >= t_x).  A fit on the boundary (a, b -> infinity, the
 *   dropout probability p = a/(a+b) the same for everyone) is the same
 *   formula with a/(b+x-1) -> p/(1-p): the large a and b give it to 1e-9.
 *   x = 0: BG/NBD puts P(alive) = 1 by construction (it cannot see
 *   one-time buyers), so they are judged by the heuristic below, as
 *   loyalty._p_alive() does.
 *
 *   MBG/NBD [BDF07, eq. 6], every x >= 0 (t_x = 0 for one purchase day):
 *     P(alive) = 1 / (1 + a/(b+x) * ((alpha+T)/(alpha+t_x))^(r+x)) < theta
 *     <=>  T > T* = (alpha+t_x) * ((1/theta - 1)(b+x)/a)^(1/(r+x)) - alpha
 *   (loyalty._lapse_at_mbgnbd), the same first day T = floor(T*) + 1, and
 *   from the last purchase day itself when T* < t_x (MBG/NBD's P(alive)
 *   starts below 1: a customer may drop out at the purchase).  Its boundary
 *   limit, reported with huge a and b (btyd.c), is the same formula.
 *
 *   Heuristic: exp(-d/gap) < theta  <=>  d > -ln(theta) * gap, with
 *   gap = (t_x + G) / (x + 1): the customer's own gaps shrunk towards the
 *   shop's mean gap G by one pseudo-gap (G alone for one-time buyers), so
 *   two orders a few days apart do not make a customer lapse in a fortnight:
 *   first day d = floor(-ln(theta) * gap) + 1 after the last purchase day.
 *
 * The result is that day's UTC midnight, or the last purchase itself when
 * the customer was below the threshold from then on.  Day offsets are capped
 * at 10,000 years (an overflowing power is +Infinity).
 *
 *   [FHL05] Fader, Hardie & Lee (2005), "Counting Your Customers the Easy
 *           Way", Marketing Science 24(2), 275-284.
 *   [BDF07] Batislam, Denizel & Filiztekin (2007), "Empirical validation
 *           and comparison of models for customer base analysis",
 *           International Journal of Research in Marketing 24(3), 201-209.
 */
#include "postgres.h"

#include <math.h>

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/timestamp.h"

#include "loyalty.h"

#define LAPSE_MAX_DAYS 3652500.0

static double
LapseClampDays(double v)
{
	if (isnan(v) || v > LAPSE_MAX_DAYS)
		return LAPSE_MAX_DAYS;
	if (v < -LAPSE_MAX_DAYS)
		return -LAPSE_MAX_DAYS;
	return floor(v);
}

/*
 * loyalty._lapse_at(purchase_days, first_order_at, last_order_at, below,
 *                   r, alpha, a, b, shop_gap): BG/NBD when r is not NULL and
 * the customer bought on two days or more, else the heuristic (shop_gap
 * NULL: 90 days).
 */
PG_FUNCTION_INFO_V1(lapse_at);
Datum
lapse_at(PG_FUNCTION_ARGS)
{
	int32		pd;
	TimestampTz first;
	TimestampTz last;
	double		below;
	int64		first_day;
	int64		last_day;
	int64		tx;
	int64		day;
	TimestampTz at;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		PG_RETURN_NULL();
	pd = PG_GETARG_INT32(0);
	first = PG_GETARG_TIMESTAMPTZ(1);
	last = PG_GETARG_TIMESTAMPTZ(2);
	below = PG_GETARG_FLOAT8(3);
	if (!(below > 0.0 && below < 1.0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the P(alive) threshold must be above 0 and below 1, got %g", below),
				 errhint("It is a win-back campaign's p_alive_below.")));
	if (pd < 1 || TIMESTAMP_NOT_FINITE(first) || TIMESTAMP_NOT_FINITE(last) || last < first)
		PG_RETURN_NULL();

	first_day = LoyaltyUtcDay(first);
	last_day = LoyaltyUtcDay(last);
	tx = last_day - first_day;

	if (!PG_ARGISNULL(4) && pd >= 2)
	{
		double		r = PG_GETARG_FLOAT8(4);
		double		alpha;
		double		a;
		double		b;
		double		x = pd - 1;
		double		tstar;
		int64		t;

		if (PG_ARGISNULL(5) || PG_ARGISNULL(6) || PG_ARGISNULL(7))
			PG_RETURN_NULL();
		alpha = PG_GETARG_FLOAT8(5);
		a = PG_GETARG_FLOAT8(6);
		b = PG_GETARG_FLOAT8(7);
		tstar = (alpha + (double) tx) * pow((1.0 / below - 1.0) * (b + x - 1.0) / a, 1.0 / (r + x)) - alpha;
		t = (int64) LapseClampDays(tstar) + 1;
		day = first_day + Max(t, tx);
	}
	else
	{
		double		shop_gap = PG_ARGISNULL(8) ? 90.0 : PG_GETARG_FLOAT8(8);
		double		gap;

		if (!(shop_gap > 0.0))
			shop_gap = 90.0;
		gap = ((double) tx + shop_gap) / pd;

		day = last_day + (int64) LapseClampDays(-log(below) * gap) + 1;
	}

	at = day * USECS_PER_DAY;
	PG_RETURN_TIMESTAMPTZ(Max(at, last));
}

/*
 * loyalty._lapse_at_mbgnbd(purchase_days, first_order_at, last_order_at,
 *                          below, r, alpha, a, b): the MBG/NBD closed form
 * above; NULL when an argument is NULL.
 */
PG_FUNCTION_INFO_V1(lapse_at_mbgnbd);
Datum
lapse_at_mbgnbd(PG_FUNCTION_ARGS)
{
	int32		pd;
	TimestampTz first;
	TimestampTz last;
	double		below,
				r,
				alpha,
				a,
				b,
				x,
				tstar;
	int64		first_day;
	int64		tx;
	int64		t;
	TimestampTz at;

	for (int i = 0; i < 8; i++)
		if (PG_ARGISNULL(i))
			PG_RETURN_NULL();
	pd = PG_GETARG_INT32(0);
	first = PG_GETARG_TIMESTAMPTZ(1);
	last = PG_GETARG_TIMESTAMPTZ(2);
	below = PG_GETARG_FLOAT8(3);
	r = PG_GETARG_FLOAT8(4);
	alpha = PG_GETARG_FLOAT8(5);
	a = PG_GETARG_FLOAT8(6);
	b = PG_GETARG_FLOAT8(7);
	if (!(below > 0.0 && below < 1.0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the P(alive) threshold must be above 0 and below 1, got %g", below),
				 errhint("It is a win-back campaign's p_alive_below.")));
	if (pd < 1 || TIMESTAMP_NOT_FINITE(first) || TIMESTAMP_NOT_FINITE(last) || last < first)
		PG_RETURN_NULL();
	if (!(r > 0.0 && alpha > 0.0 && a > 0.0 && b > 0.0))
		PG_RETURN_NULL();

	first_day = LoyaltyUtcDay(first);
	tx = LoyaltyUtcDay(last) - first_day;
	x = pd - 1;
	tstar = (alpha + (double) tx) * pow((1.0 / below - 1.0) * (b + x) / a, 1.0 / (r + x)) - alpha;
	t = (int64) LapseClampDays(tstar) + 1;
	at = (first_day + Max(t, tx)) * USECS_PER_DAY;
	PG_RETURN_TIMESTAMPTZ(Max(at, last));
}

/*
 * loyalty._reorder_at(purchase_days, first_order_at, last_order_at, factor):
 * the first UTC midnight at or after last + factor * the customer's mean gap
 * between first and last order; NULL below two purchase days.
 */
PG_FUNCTION_INFO_V1(reorder_at);
Datum
reorder_at(PG_FUNCTION_ARGS)
{
	int32		pd;
	TimestampTz first;
	TimestampTz last;
	double		factor;
	double		due;
	int64		day;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		PG_RETURN_NULL();
	pd = PG_GETARG_INT32(0);
	first = PG_GETARG_TIMESTAMPTZ(1);
	last = PG_GETARG_TIMESTAMPTZ(2);
	factor = PG_GETARG_FLOAT8(3);
	if (!(factor > 0.0 && factor <= 10.0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the reorder factor must be above 0 and at most 10, got %g", factor),
				 errhint("It is a repurchase_reminder campaign's factor.")));
	if (pd < 2 || TIMESTAMP_NOT_FINITE(first) || TIMESTAMP_NOT_FINITE(last) || last < first)
		PG_RETURN_NULL();

	/* microseconds fit a double exactly up to 2^53 (about 285 years) */
	due = (double) last + factor * ((double) (last - first) / (pd - 1));
	day = LoyaltyUtcDay((TimestampTz) floor(due));
	if ((double) day * USECS_PER_DAY < due)
		day++;
	PG_RETURN_TIMESTAMPTZ(day * USECS_PER_DAY);
}

