/*
 * capture.c — what loyalty accepts from a shop row or an API call
 *
 * One set of bounds for every way a value enters loyalty: the capture
 * trigger (intake.c), backfill and replay (SQL), and the public API. Each
 * check returns the reason a value is refused (NULL when it is fine); the
 * capture path quarantines the row with that reason, the API raises it.
 *
 *   keys (customer, order, idempotency keys, channel names): not blank, at most
 *     LOYALTY_MAX_KEY_CHARS characters, no control character and no space other
 *     than U+0020 (tabs, newlines, no-break and other Unicode spaces look
 *     identical to a plain key on a screen and make a second customer);
 *   amounts: finite, not negative, at most LOYALTY_MAX_AMOUNT;
 *   times: 1970-01-01 .. 2100-01-01 UTC, and not later than the reference
 *     time (capture time, or now) plus loyalty.future_tolerance.
 *
 * It also reads a column value as text through the type's output function
 * (loyalty._as_text), the one way SQL code of loyalty turns a shop value into
 * text: unlike a cast (::text, to_jsonb), an output function cannot be
 * replaced by the type's owner.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "loyalty.h"

int			loyalty_future_tolerance = 300;

/* 1970-01-01 and 2100-01-01 00:00 UTC, in PostgreSQL's microseconds since 2000 */
#define LOYALTY_MIN_TIME	INT64CONST(-946684800000000)
#define LOYALTY_MAX_TIME	INT64CONST(3155760000000000)

/* Define the capture settings */
void
LoyaltyCaptureInit(void)
{
	DefineCustomIntVariable("loyalty.future_tolerance",
							"How far in the future an order may be dated (clock skew) before it is quarantined.",
							NULL, &loyalty_future_tolerance, 300, 0, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

/* Is this code point a control character or a space other than U+0020? */
static bool
CaptureBadCodePoint(pg_wchar c)
{
	if (c < 0x20 || c == 0x7F || (c >= 0x80 && c <= 0x9F))
		return true;			/* C0, DEL, C1 controls (tab, newline, ...) */
	if (c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200B) ||
		c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
		c == 0x3000 || c == 0xFEFF || c == 0x180E)
		return true;			/* Unicode spaces, zero-width space, BOM */
	return false;
}

/* Reason a key (customer, order, channel) is refused, or NULL */
const char *
LoyaltyKeyProblem(const char *s, int len)
{
	return LoyaltyKeyProblemMax(s, len, LOYALTY_MAX_KEY_CHARS);
}

/* The same rule with another length limit (the ledger's idempotency keys: 500) */
const char *
LoyaltyKeyProblemMax(const char *s, int len, int max_chars)
{
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;
	int			chars = 0;
	bool		blank = true;

	if (len > max_chars * 4)
		return psprintf("longer than %d characters", max_chars);
	while (p < end)
	{
		int			l = pg_mblen((const char *) p);
		pg_wchar	c;

		if (p + l > end)
			break;
		if (GetDatabaseEncoding() == PG_UTF8)
			c = utf8_to_unicode(p);
		else
			c = (l == 1) ? *p : 0xFFFF;
		if (CaptureBadCodePoint(c))
			return "contains a control character or a space other than U+0020";
		if (c != ' ')
			blank = false;
		chars++;
		p += l;
	}
	if (blank)
		return "is empty";
	if (chars > max_chars)
		return psprintf("longer than %d characters", max_chars);
	return NULL;
}

/* Reason an amount is refused, or NULL */
const char *
LoyaltyAmountProblem(Numeric n)
{
	if (numeric_is_nan(n))
		return "is NaN";
	if (numeric_is_inf(n))
		return "is infinite";
	if (DatumGetBool(DirectFunctionCall2(numeric_lt, NumericGetDatum(n),
										 DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))))
		return "is negative";
	if (DatumGetBool(DirectFunctionCall2(numeric_gt, NumericGetDatum(n),
										 DirectFunctionCall3(numeric_in, CStringGetDatum(LOYALTY_MAX_AMOUNT),
															 ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)))))
		return "exceeds " LOYALTY_MAX_AMOUNT;
	return NULL;
}

/* Reason a time is refused (reference: when it was captured, or now), or NULL */
const char *
LoyaltyTimeProblem(TimestampTz t, TimestampTz reference, bool check_future)
{
	if (TIMESTAMP_NOT_FINITE(t))
		return "is infinite";
	if (t < LOYALTY_MIN_TIME || t >= LOYALTY_MAX_TIME)
		return "is outside 1970-01-01 .. 2100-01-01";
	if (check_future && t > reference + (int64) loyalty_future_tolerance * USECS_PER_SEC)
		return "is in the future (more than loyalty.future_tolerance ahead)";
	return NULL;
}

PG_FUNCTION_INFO_V1(loyalty_key_problem);

/* loyalty._key_problem(text[, max_chars]) → why the key is refused, NULL when fine */
Datum
loyalty_key_problem(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	int			max_chars = PG_NARGS() > 1 ? PG_GETARG_INT32(1) : LOYALTY_MAX_KEY_CHARS;
	const char *p = LoyaltyKeyProblemMax(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), max_chars);

	if (p == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(p));
}

/* Is the key under loyalty's reserved prefix (its own order points, expiry, staff messages)? */
bool
LoyaltyKeyReserved(const char *s, int len)
{
	int			plen = strlen(LOYALTY_RESERVED_KEY_PREFIX);

	return len >= plen && strncmp(s, LOYALTY_RESERVED_KEY_PREFIX, plen) == 0;
}

PG_FUNCTION_INFO_V1(loyalty_key_reserved);

/* loyalty._key_reserved(text) → whether the key is under the reserved prefix */
Datum
loyalty_key_reserved(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(LoyaltyKeyReserved(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
}

PG_FUNCTION_INFO_V1(loyalty_check_key);

/* loyalty.check_key(value text, what text) → value, or 22004/22023 with a hint */
Datum
loyalty_check_key(PG_FUNCTION_ARGS)
{
	const char *what = PG_ARGISNULL(1) ? "key" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	text	   *t;
	const char *p;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null or empty", what),
				 errhint("Pass the shop's own key as text, e.g. '42'.")));
	t = PG_GETARG_TEXT_PP(0);
	p = LoyaltyKeyProblem(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	if (p != NULL && strcmp(p, "is empty") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null or empty", what),
				 errhint("Pass the shop's own key as text, e.g. '42'.")));
	if (p != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %s", what, p),
				 errhint("Keys are at most %d characters of printable text; tabs, newlines and no-break or other Unicode spaces are refused.",
						 LOYALTY_MAX_KEY_CHARS)));
	PG_RETURN_TEXT_P(t);
}

PG_FUNCTION_INFO_V1(loyalty_amount_problem);

/* loyalty._amount_problem(numeric) → why the amount is refused, NULL when fine */
Datum
loyalty_amount_problem(PG_FUNCTION_ARGS)
{
	const char *p = LoyaltyAmountProblem(PG_GETARG_NUMERIC(0));

	if (p == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(p));
}

PG_FUNCTION_INFO_V1(loyalty_time_problem);

/* loyalty._time_problem(t, reference) → why the time is refused, NULL when fine (reference NULL: no future check) */
Datum
loyalty_time_problem(PG_FUNCTION_ARGS)
{
	const char *p;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	p = LoyaltyTimeProblem(PG_GETARG_TIMESTAMPTZ(0),
						   PG_ARGISNULL(1) ? 0 : PG_GETARG_TIMESTAMPTZ(1), !PG_ARGISNULL(1));
	if (p == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(p));
}

PG_FUNCTION_INFO_V1(loyalty_as_text);

/* loyalty._as_text(anyelement) → the value's text through its type's output function (never a cast) */
Datum
loyalty_as_text(PG_FUNCTION_ARGS)
{
	Oid			typid = get_fn_expr_argtype(fcinfo->flinfo, 0);
	Oid			typoutput;
	bool		typisvarlena;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (!OidIsValid(typid))
		elog(ERROR, "could not determine the argument type of loyalty._as_text()");
	getTypeOutputInfo(typid, &typoutput, &typisvarlena);
	PG_RETURN_TEXT_P(cstring_to_text(OidOutputFunctionCall(typoutput, PG_GETARG_DATUM(0))));
}
