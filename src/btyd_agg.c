/*
 * btyd_agg.c — parallel aggregation for the BTYD fitting aggregates
 * (bgnbd_fit, mbgnbd_fit, pareto_nbd_fit, gamma_gamma_fit): serialise,
 * deserialise and combine the collected rows of a BtydState.
 *
 * Each parallel worker collects its share of the rows and sorts it while
 * serialising (in parallel); the leader merges the sorted runs in linear
 * time, so the final function finds the rows sorted and skips its sort.
 * The merged rows are the same whatever the split, so a parallel fit is
 * identical to a serial one.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/memutils.h"

#include "btyd.h"

/* Serialised state: header, then n rows of rowsize bytes */
typedef struct BtydSerialHeader
{
	int64		n;
	int32		rowsize;
	int32		sorted;
} BtydSerialHeader;

/* Row order of the state's kind of row */
static int
BtydRowCmp(Size rowsize, const void *a, const void *b)
{
	if (rowsize == sizeof(BgnbdRow))
		return BgnbdRowCmp(a, b);
	return GgRowCmp(a, b);
}

/* Sort a state's rows in place (t_x = 0 for x = 0 first, as BgnbdCompress does) */
static void
BtydStateSort(BtydState *st)
{
	if (st->sorted)
		return;
	if (st->rowsize == sizeof(BgnbdRow))
	{
		BgnbdRow   *rows = (BgnbdRow *) st->rows;

		for (int64 i = 0; i < st->n; i++)
			if (rows[i].x == 0)
				rows[i].tx = 0.0;
		qsort(rows, st->n, sizeof(BgnbdRow), BgnbdRowCmp);
	}
	else if (st->rowsize == sizeof(GgRow))
		qsort(st->rows, st->n, sizeof(GgRow), GgRowCmp);
	else
		elog(ERROR, "unexpected btyd row size %zu", st->rowsize);
	st->sorted = true;
}

/* btyd_fit_serial(internal) returns bytea: sorted rows of a partial state */
PG_FUNCTION_INFO_V1(btyd_fit_serial);
Datum
btyd_fit_serial(PG_FUNCTION_ARGS)
{
	BtydState  *st = (BtydState *) PG_GETARG_POINTER(0);
	BtydSerialHeader h;
	Size		len;
	bytea	   *out;

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "btyd_fit_serial called in non-aggregate context");
	BtydStateSort(st);
	h.n = st->n;
	h.rowsize = (int32) st->rowsize;
	h.sorted = 1;
	len = sizeof(h) + st->n * st->rowsize;
	if (len > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many rows for a parallel fit: %lld", (long long) st->n),
				 errhint("Run the fit without parallel workers: SET max_parallel_workers_per_gather = 0.")));
	out = (bytea *) palloc(VARHDRSZ + len);
	SET_VARSIZE(out, VARHDRSZ + len);
	memcpy(VARDATA(out), &h, sizeof(h));
	memcpy(VARDATA(out) + sizeof(h), st->rows, st->n * st->rowsize);
	PG_RETURN_BYTEA_P(out);
}

/* btyd_fit_deserial(bytea, internal) returns internal */
PG_FUNCTION_INFO_V1(btyd_fit_deserial);
Datum
btyd_fit_deserial(PG_FUNCTION_ARGS)
{
	bytea	   *in = PG_GETARG_BYTEA_PP(0);
	BtydSerialHeader h;
	BtydState  *st;

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "btyd_fit_deserial called in non-aggregate context");
	if (VARSIZE_ANY_EXHDR(in) < sizeof(h))
		elog(ERROR, "corrupt btyd aggregate state");
	memcpy(&h, VARDATA_ANY(in), sizeof(h));
	if ((h.rowsize != sizeof(BgnbdRow) && h.rowsize != sizeof(GgRow)) || h.n < 0 ||
		VARSIZE_ANY_EXHDR(in) != sizeof(h) + h.n * h.rowsize)
		elog(ERROR, "corrupt btyd aggregate state");
	st = palloc0(sizeof(BtydState));
	st->n = h.n;
	st->cap = Max(h.n, 1);
	st->rowsize = h.rowsize;
	st->sorted = (h.sorted != 0);
	st->rows = MemoryContextAllocHuge(CurrentMemoryContext, st->cap * st->rowsize);
	memcpy(st->rows, VARDATA_ANY(in) + sizeof(h), h.n * h.rowsize);
	PG_RETURN_POINTER(st);
}

/*
 * btyd_fit_combine(internal, internal) returns internal: the rows of both
 * states in the aggregate context, merged in order when both are sorted.
 */
PG_FUNCTION_INFO_V1(btyd_fit_combine);
Datum
btyd_fit_combine(PG_FUNCTION_ARGS)
{
	BtydState  *s1 = PG_ARGISNULL(0) ? NULL : (BtydState *) PG_GETARG_POINTER(0);
	BtydState  *s2 = PG_ARGISNULL(1) ? NULL : (BtydState *) PG_GETARG_POINTER(1);
	MemoryContext aggcontext;
	BtydState  *st;
	Size		rs;

	if (!AggCheckCallContext(fcinfo, &aggcontext))
		elog(ERROR, "btyd_fit_combine called in non-aggregate context");
	if (s2 == NULL || s2->n == 0)
	{
		if (s1 == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(s1);
	}
	if (s1 != NULL && s1->rowsize != s2->rowsize)
		elog(ERROR, "btyd aggregate states of different kinds");
	rs = s2->rowsize;

	st = MemoryContextAllocZero(aggcontext, sizeof(BtydState));
	st->rowsize = rs;
	st->n = (s1 ? s1->n : 0) + s2->n;
	st->cap = st->n;
	st->rows = MemoryContextAllocHuge(aggcontext, st->cap * rs);
	if (s1 == NULL || s1->n == 0)
	{
		memcpy(st->rows, s2->rows, s2->n * rs);
		st->sorted = s2->sorted;
	}
	else if (s1->sorted && s2->sorted)
	{
		int64		i = 0,
					j = 0,
					k = 0;

		while (i < s1->n && j < s2->n)
		{
			const char *a = s1->rows + i * rs,
					   *b = s2->rows + j * rs;

			if (BtydRowCmp(rs, a, b) <= 0)
			{
				memcpy(st->rows + k * rs, a, rs);
				i++;
			}
			else
			{
				memcpy(st->rows + k * rs, b, rs);
				j++;
			}
			k++;
		}
		memcpy(st->rows + k * rs, s1->rows + i * rs, (s1->n - i) * rs);
		k += s1->n - i;
		memcpy(st->rows + k * rs, s2->rows + j * rs, (s2->n - j) * rs);
		st->sorted = true;
	}
	else
	{
		memcpy(st->rows, s1->rows, s1->n * rs);
		memcpy(st->rows + s1->n * rs, s2->rows, s2->n * rs);
		st->sorted = false;
	}
	/* s1 is always one of ours (internal states are passed by value) */
	if (s1 != NULL)
	{
		pfree(s1->rows);
		pfree(s1);
	}
	PG_RETURN_POINTER(st);
}
