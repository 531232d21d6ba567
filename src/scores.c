/*
 * scores.c — one customer's stored churn/CLV values in one call
 *
 * loyalty._score_values computes what loyalty._store_scores (50_models.sql)
 * stores for a customer from the customer's state row: the model inputs as
 * loyalty.model_inputs_at derives them, the model that decides
 * (loyalty._p_alive_model), P(alive) (loyalty._p_alive_days), expected
 * purchase days in 90 days and in the horizon (loyalty._expected_days) and the
 * expected order value (Gamma-Gamma or the mean order value). It is those SQL
 * definitions written out in C, operation for operation with the same
 * PostgreSQL functions (float8 arithmetic with its overflow checks, dexp,
 * dpow, numeric, the models' own SQL-callable functions), so every value is
 * bit for bit the one the SQL computes; the SQL stays the definition, and
 * the regression test store_scores compares the two. Keep them in step.
 * Why: at 1,000,000 customers the SQL expressions (time zone conversions,
 * CASEs, numeric) cost seconds per pass, this call a fraction.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

#include "loyalty.h"

/* the models' SQL-callable functions (btyd.c, mbgnbd.c, pareto_nbd.c) */
extern Datum bgnbd_p_alive(PG_FUNCTION_ARGS);
extern Datum bgnbd_expected(PG_FUNCTION_ARGS);
extern Datum mbgnbd_p_alive(PG_FUNCTION_ARGS);
extern Datum mbgnbd_expected(PG_FUNCTION_ARGS);
extern Datum pareto_nbd_p_alive(PG_FUNCTION_ARGS);
extern Datum pareto_nbd_expected(PG_FUNCTION_ARGS);
extern Datum gamma_gamma_mean(PG_FUNCTION_ARGS);

/* The deciding model, as loyalty._p_alive_model */
typedef enum ScoreModel
{
	SCORE_HEURISTIC,
	SCORE_BGNBD,
	SCORE_BGNBD_LIMIT,
	SCORE_MBGNBD,
	SCORE_PARETO_NBD
} ScoreModel;

static const char *const ScoreModelNames[] = {"heuristic", "bgnbd", "bgnbd_limit", "mbgnbd", "pareto_nbd"};

/* The shop's model and its parameters, fixed for a call */
typedef struct ScoreParams
{
	ScoreModel	model;			/* the shop's model (before one-time buyers) */
	bool		have;			/* r, alpha, a, b all given */
	double		r;
	double		alpha;
	double		a;
	double		b;
	double		gap;			/* coalesce(shop_gap, 90) */
} ScoreParams;

/* Days from one time to another as loyalty._utc_days (finite times only) */
static int32
ScoreUtcDays(TimestampTz from, TimestampTz to)
{
	if (TIMESTAMP_NOT_FINITE(from) || TIMESTAMP_NOT_FINITE(to))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("cannot count days to or from an infinite time"),
				 errhint("Order times and as_of must be finite.")));
	return (int32) LoyaltyUtcDays(from, to);
}

/* least(v, 1) with PostgreSQL's float8 order (NaN above everything) */
static double
ScoreLeast1(double v)
{
	return float8_lt(v, 1.0) ? v : 1.0;
}

/* loyalty._p_alive_days; *isnull when the SQL gives NULL */
static double
ScorePAlive(ScoreModel m, const ScoreParams *pr, int32 x, double tx, double T, double days, bool *isnull)
{
	*isnull = false;
	switch (m)
	{
		case SCORE_BGNBD:
		case SCORE_MBGNBD:
		case SCORE_PARETO_NBD:
			{
				PGFunction fn = m == SCORE_BGNBD ? bgnbd_p_alive
					: m == SCORE_MBGNBD ? mbgnbd_p_alive : pareto_nbd_p_alive;

				/* least(f(...), 1): a NULL (strict f, a parameter NULL) is 1 */
				if (!pr->have)
					return 1.0;
				return ScoreLeast1(DatumGetFloat8(DirectFunctionCall7(fn, Int32GetDatum(x), Float8GetDatum(tx),
																	  Float8GetDatum(T), Float8GetDatum(pr->r),
																	  Float8GetDatum(pr->alpha), Float8GetDatum(pr->a),
																	  Float8GetDatum(pr->b))));
			}
		case SCORE_BGNBD_LIMIT:
			{
				/* 1 / (1 + a / b * power((alpha + T) / (alpha + t_x), r + x)) */
				double		pw;

				if (!pr->have)
				{
					*isnull = true;
					return 0.0;
				}
				pw = DatumGetFloat8(DirectFunctionCall2(dpow,
														Float8GetDatum(float8_div(float8_pl(pr->alpha, T),
																				  float8_pl(pr->alpha, tx))),
														Float8GetDatum(float8_pl(pr->r, (double) x))));
				return float8_div(1.0, float8_pl(1.0, float8_mul(float8_div(pr->a, pr->b), pw)));
			}
		case SCORE_HEURISTIC:
			break;
	}
	/* exp(greatest(-700, -d * (x + 1) / (t_x + coalesce(shop_gap, 90)))) */
	{
		double		e = float8_div(float8_mul(-days, (double) (x + 1)), float8_pl(tx, pr->gap));

		if (!float8_gt(e, -700.0))
			e = -700.0;
		return DatumGetFloat8(DirectFunctionCall1(dexp, Float8GetDatum(e)));
	}
}

/* loyalty._expected_days over horizon h; *isnull when the SQL gives NULL */
static double
ScoreExpected(ScoreModel m, const ScoreParams *pr, double h, int32 x, double tx, double T, double days,
			  bool *isnull)
{
	double		pa;

	*isnull = false;
	switch (m)
	{
		case SCORE_BGNBD:
		case SCORE_MBGNBD:
		case SCORE_PARETO_NBD:
			{
				PGFunction fn = m == SCORE_BGNBD ? bgnbd_expected
					: m == SCORE_MBGNBD ? mbgnbd_expected : pareto_nbd_expected;

				if (!pr->have)
				{
					*isnull = true;
					return 0.0;
				}
				return DatumGetFloat8(DirectFunctionCall8(fn, Float8GetDatum(h), Int32GetDatum(x),
														  Float8GetDatum(tx), Float8GetDatum(T),
														  Float8GetDatum(pr->r), Float8GetDatum(pr->alpha),
														  Float8GetDatum(pr->a), Float8GetDatum(pr->b)));
			}
		case SCORE_BGNBD_LIMIT:
			{
				/*
				 * P(alive) * (a + b) / a * (1 - power((alpha + T) / (alpha + T
				 * + a / (a + b) * h), r + x))
				 */
				double		pw;

				pa = ScorePAlive(m, pr, x, tx, T, days, isnull);
				if (*isnull)
					return 0.0;
				pw = DatumGetFloat8(DirectFunctionCall2(dpow,
														Float8GetDatum(float8_div(float8_pl(pr->alpha, T),
																				  float8_pl(float8_pl(pr->alpha, T),
																							float8_mul(float8_div(pr->a, float8_pl(pr->a, pr->b)),
																									   h)))),
														Float8GetDatum(float8_pl(pr->r, (double) x))));
				return float8_mul(float8_div(float8_mul(pa, float8_pl(pr->a, pr->b)), pr->a), float8_mi(1.0, pw));
			}
		case SCORE_HEURISTIC:
			break;
	}
	/* P(alive) * horizon * (x + 1) / (t_x + coalesce(shop_gap, 90)) */
	pa = ScorePAlive(m, pr, x, tx, T, days, isnull);
	return float8_div(float8_mul(float8_mul(pa, h), (double) (x + 1)), float8_pl(tx, pr->gap));
}

/*
 * loyalty._score_values(first_order_at, last_order_at, purchase_days,
 *     net_spend, first_day_spend, avg_spend, as_of, model, r, alpha, a, b,
 *     shop_gap, gamma_gamma, p, q, gamma, horizon)
 *   -> (model, p_alive, e90, eh, eov)
 * The first six are the customer's loyalty.customer_state columns; model
 * and its parameters as in loyalty.current_model; gamma_gamma: whether a
 * Gamma-Gamma fit (p, q, gamma) is in force. Not strict: NULLs as the SQL.
 */
PG_FUNCTION_INFO_V1(score_values);
Datum
score_values(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	ScoreParams pr;
	ScoreModel	m;
	TimestampTz first,
				last,
				as_of;
	int32		x,
				days;
	double		tx,
				T,
				h;
	char	   *name;
	int			i;

	for (i = 0; i <= 7; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("customer state, as_of and model must not be NULL"),
					 errhint("Pass a loyalty.customer_state row, a time and a model of loyalty.current_model.")));
	/* the result row type, looked up once per query */
	tupdesc = (TupleDesc) fcinfo->flinfo->fn_extra;
	if (tupdesc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		fcinfo->flinfo->fn_extra = tupdesc;
		MemoryContextSwitchTo(old);
	}
	first = PG_GETARG_TIMESTAMPTZ(0);
	last = PG_GETARG_TIMESTAMPTZ(1);
	as_of = PG_GETARG_TIMESTAMPTZ(6);

	/* the shop's model: loyalty._p_alive_model's names */
	name = text_to_cstring(PG_GETARG_TEXT_PP(7));
	pr.model = SCORE_HEURISTIC;
	for (i = 1; i < (int) lengthof(ScoreModelNames); i++)
		if (strcmp(name, ScoreModelNames[i]) == 0)
			pr.model = (ScoreModel) i;
	pr.have = !PG_ARGISNULL(8) && !PG_ARGISNULL(9) && !PG_ARGISNULL(10) && !PG_ARGISNULL(11);
	pr.r = pr.have ? PG_GETARG_FLOAT8(8) : 0.0;
	pr.alpha = pr.have ? PG_GETARG_FLOAT8(9) : 0.0;
	pr.a = pr.have ? PG_GETARG_FLOAT8(10) : 0.0;
	pr.b = pr.have ? PG_GETARG_FLOAT8(11) : 0.0;
	pr.gap = PG_ARGISNULL(12) ? 90.0 : PG_GETARG_FLOAT8(12);
	h = PG_ARGISNULL(17) ? 90.0 : PG_GETARG_FLOAT8(17);

	/* the inputs, as loyalty.model_inputs_at */
	x = PG_GETARG_INT32(2) - 1;
	tx = (double) ScoreUtcDays(first, last);
	T = (double) ScoreUtcDays(first, as_of > last ? as_of : last);
	days = ScoreUtcDays(last, as_of);

	/* one-time buyers under BG/NBD: the heuristic (loyalty._p_alive_model) */
	m = pr.model;
	if ((m == SCORE_BGNBD || m == SCORE_BGNBD_LIMIT) && x <= 0)
		m = SCORE_HEURISTIC;

	values[0] = CStringGetTextDatum(ScoreModelNames[m]);
	values[1] = Float8GetDatum(ScorePAlive(m, &pr, x, tx, T, (double) days, &nulls[1]));
	values[2] = Float8GetDatum(ScoreExpected(m, &pr, 90.0, x, tx, T, (double) days, &nulls[2]));
	/* the horizon's, computed only when it is not the 90 days already there */
	if (h == 90.0)
	{
		values[3] = values[2];
		nulls[3] = nulls[2];
	}
	else
		values[3] = Float8GetDatum(ScoreExpected(m, &pr, h, x, tx, T, (double) days, &nulls[3]));

	/*
	 * Expected order value: Gamma-Gamma for repeat buyers with a positive
	 * repeat spend ((net_spend - first_day_spend) / (purchase_days - 1)), its
	 * population mean p gamma / (q - 1) for the others, else the mean order
	 * value.
	 */
	{
		bool		gg = !PG_ARGISNULL(13) && PG_GETARG_BOOL(13);
		bool		done = false;

		if (gg && x > 0 && !PG_ARGISNULL(3) && !PG_ARGISNULL(4))
		{
			Datum		rv = DirectFunctionCall2(numeric_div,
												 DirectFunctionCall2(numeric_sub, PG_GETARG_DATUM(3), PG_GETARG_DATUM(4)),
												 DirectFunctionCall1(int4_numeric, Int32GetDatum(x)));

			if (DatumGetBool(DirectFunctionCall2(numeric_gt, rv, DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))))
			{
				if (PG_ARGISNULL(14) || PG_ARGISNULL(15) || PG_ARGISNULL(16))
					nulls[4] = true;
				else
					values[4] = DirectFunctionCall5(gamma_gamma_mean, Int32GetDatum(x),
													DirectFunctionCall1(numeric_float8, rv),
													PG_GETARG_DATUM(14), PG_GETARG_DATUM(15), PG_GETARG_DATUM(16));
				done = true;
			}
		}
		if (!done && gg && !PG_ARGISNULL(15) && float8_gt(PG_GETARG_FLOAT8(15), 1.0))
		{
			if (PG_ARGISNULL(14) || PG_ARGISNULL(16))
				nulls[4] = true;
			else
				values[4] = Float8GetDatum(float8_div(float8_mul(PG_GETARG_FLOAT8(14), PG_GETARG_FLOAT8(16)),
													  float8_mi(PG_GETARG_FLOAT8(15), 1.0)));
			done = true;
		}
		if (!done)
		{
			if (PG_ARGISNULL(5))
				nulls[4] = true;
			else
				values[4] = DirectFunctionCall1(numeric_float8, PG_GETARG_DATUM(5));
		}
	}

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
