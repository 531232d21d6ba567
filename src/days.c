/*
 * days.c — loyalty's one definition of a day
 *
 * Days are whole UTC calendar days: an order's day is its UTC date, and the
 * days from one time to another are the difference of their UTC dates, never
 * negative (an order dated a little ahead, within loyalty.future_tolerance,
 * is 0 days old). Customer state counts purchase days this way, the models
 * take x, t_x, t and the days since the last purchase this way (SQL:
 * loyalty._utc_days, 00_base.sql), RFM recency (rfm.c) and the journeys'
 * lapse and reorder dates (journey_dates.c) too.
 */
#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/date.h"
#include "utils/timestamp.h"

#include "loyalty.h"

/* Whole UTC days since 2000-01-01 of a finite timestamptz (floor, also before 2000) */
int64
LoyaltyUtcDay(TimestampTz ts)
{
	int64		day = ts / USECS_PER_DAY;

	if (ts < 0 && ts % USECS_PER_DAY != 0)
		day--;
	return day;
}

/* UTC days from one finite time to another, never negative (loyalty._utc_days) */
int64
LoyaltyUtcDays(TimestampTz from, TimestampTz to)
{
	return Max(LoyaltyUtcDay(to) - LoyaltyUtcDay(from), 0);
}

/*
 * loyalty._utc_days(from timestamptz, to timestamptz) returns integer: the
 * SQL face of LoyaltyUtcDays. A C function because it is called per
 * customer and per model input; the SQL form ((t AT TIME ZONE 'UTC')::date)
 * parsed the zone name on every call.
 */
PG_FUNCTION_INFO_V1(loyalty_utc_days);
Datum
loyalty_utc_days(PG_FUNCTION_ARGS)
{
	TimestampTz from = PG_GETARG_TIMESTAMPTZ(0);
	TimestampTz to = PG_GETARG_TIMESTAMPTZ(1);

	if (TIMESTAMP_NOT_FINITE(from) || TIMESTAMP_NOT_FINITE(to))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("cannot count days to or from an infinite time"),
				 errhint("Pass finite times.")));
	PG_RETURN_INT32((int32) LoyaltyUtcDays(from, to));
}

/*
 * loyalty._utc_date(t timestamptz) returns date: t's UTC date, the day an
 * order counts on (a date is days since 2000-01-01, as LoyaltyUtcDay
 * counts). Per order in the state and holdout queries, where
 * (t AT TIME ZONE 'UTC')::date parsed the zone name on every row.
 */
PG_FUNCTION_INFO_V1(loyalty_utc_date);
Datum
loyalty_utc_date(PG_FUNCTION_ARGS)
{
	TimestampTz ts = PG_GETARG_TIMESTAMPTZ(0);

	if (TIMESTAMP_IS_NOBEGIN(ts))
		PG_RETURN_DATEADT(DATEVAL_NOBEGIN);
	if (TIMESTAMP_IS_NOEND(ts))
		PG_RETURN_DATEADT(DATEVAL_NOEND);
	PG_RETURN_DATEADT((DateADT) LoyaltyUtcDay(ts));
}
