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
 *
 * Large fits start from the optimum on a subsample (BtydSubsampleStart),
 * which saves most of the optimiser's passes over the full data.
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
	int32		nstart;
	double		start[4];
} BtydSerialHeader;

/* Row order of the state's kind of row */
static int
BtydRowCmp(Size rowsize, const void *a, const void *b)
{
	if (rowsize == sizeof(BgnbdRow))
		return BgnbdRowCmp(a, b);
	return GgRowCmp(a, b);
}

/* A sort key and the position it came from */
typedef struct BtydKey
{
	uint64		key;
	int64		idx;
} BtydKey;

/* Order-preserving key of a non-negative double (its bits; -0 as 0) */
static inline uint64
BtydDoubleKey(double v)
{
	uint64		u;

	if (v == 0.0)
		return 0;
	memcpy(&u, &v, sizeof(u));
	return u;
}

/*
 * Stable LSD radix sort of a[0..n-1] by the low `bits` bits of key, 16 bits
 * a pass (a pass where every key has the same digit is skipped); tmp is
 * scratch of the same size.  Returns the buffer holding the result.
 */
static BtydKey *
BtydRadixSort(BtydKey *a, BtydKey *tmp, int64 n, int bits)
{
	int64	   *count = palloc(65536 * sizeof(int64));

	for (int shift = 0; shift < bits; shift += 16)
	{
		int64		pos = 0;
		BtydKey    *swap;

		memset(count, 0, 65536 * sizeof(int64));
		for (int64 i = 0; i < n; i++)
			count[(a[i].key >> shift) & 0xFFFF]++;
		if (count[(a[0].key >> shift) & 0xFFFF] == n)
			continue;
		for (int d = 0; d < 65536; d++)
		{
			int64		c = count[d];

			count[d] = pos;
			pos += c;
		}
		for (int64 i = 0; i < n; i++)
			tmp[count[(a[i].key >> shift) & 0xFFFF]++] = a[i];
		swap = a;
		a = tmp;
		tmp = swap;
	}
	pfree(count);
	return a;
}

/*
 * Sort BG/NBD rows in BgnbdRowCmp order (x, then T, then t_x) by three
 * stable radix sorts, least significant field first: O(n), no comparator
 * calls, where qsort was most of the time of compressing a million rows.
 */
void
BtydSortRows(BgnbdRow *rows, int64 n)
{
	BtydKey    *a,
			   *b,
			   *res;
	BgnbdRow   *out;

	if (n < 2)
		return;
	a = MemoryContextAllocHuge(CurrentMemoryContext, n * sizeof(BtydKey));
	b = MemoryContextAllocHuge(CurrentMemoryContext, n * sizeof(BtydKey));
	for (int64 i = 0; i < n; i++)
	{
		a[i].key = BtydDoubleKey(rows[i].tx);
		a[i].idx = i;
	}
	res = BtydRadixSort(a, b, n, 64);
	for (int64 i = 0; i < n; i++)
		res[i].key = BtydDoubleKey(rows[res[i].idx].T);
	res = BtydRadixSort(res, (res == a) ? b : a, n, 64);
	for (int64 i = 0; i < n; i++)
		res[i].key = (uint32) rows[res[i].idx].x;
	res = BtydRadixSort(res, (res == a) ? b : a, n, 32);
	out = MemoryContextAllocHuge(CurrentMemoryContext, n * sizeof(BgnbdRow));
	for (int64 i = 0; i < n; i++)
		out[i] = rows[res[i].idx];
	memcpy(rows, out, n * sizeof(BgnbdRow));
	pfree(out);
	pfree(a);
	pfree(b);
}

/*
 * Sort Gamma-Gamma rows in GgRowCmp order (x, then m) by two stable radix
 * sorts, m first (m >= 0: GgCheckCustomer), as BtydSortRows does.
 */
void
BtydSortGgRows(GgRow *rows, int64 n)
{
	BtydKey    *a,
			   *b,
			   *res;
	GgRow	   *out;

	if (n < 2)
		return;
	a = MemoryContextAllocHuge(CurrentMemoryContext, n * sizeof(BtydKey));
	b = MemoryContextAllocHuge(CurrentMemoryContext, n * sizeof(BtydKey));
	for (int64 i = 0; i < n; i++)
	{
		a[i].key = BtydDoubleKey(rows[i].m);
		a[i].idx = i;
	}
	res = BtydRadixSort(a, b, n, 64);
	for (int64 i = 0; i < n; i++)
		res[i].key = (uint32) rows[res[i].idx].x;
	res = BtydRadixSort(res, (res == a) ? b : a, n, 32);
	out = MemoryContextAllocHuge(CurrentMemoryContext, n * sizeof(GgRow));
	for (int64 i = 0; i < n; i++)
		out[i] = rows[res[i].idx];
	memcpy(rows, out, n * sizeof(GgRow));
	pfree(out);
	pfree(a);
	pfree(b);
}

/*
 * The distinct time values of n rows (T and t_x), sorted, in *tvp (*ntp of
 * them), and each row's indexes into them in iT[] and itx[]: one radix
 * sort of the 2n values instead of a sort and 2n binary searches.
 */
void
BtydIndexTimes(const BgnbdRow *rows, int64 n, double **tvp, int64 *ntp,
			   int32 *iT, int32 *itx)
{
	BtydKey    *a = MemoryContextAllocHuge(CurrentMemoryContext, 2 * n * sizeof(BtydKey));
	BtydKey    *b = MemoryContextAllocHuge(CurrentMemoryContext, 2 * n * sizeof(BtydKey));
	BtydKey    *res;
	double	   *tv = MemoryContextAllocHuge(CurrentMemoryContext, Max(2 * n, 1) * sizeof(double));
	int64		nt = 0;

	for (int64 i = 0; i < n; i++)
	{
		a[2 * i].key = BtydDoubleKey(rows[i].T);
		a[2 * i].idx = 2 * i;
		a[2 * i + 1].key = BtydDoubleKey(rows[i].tx);
		a[2 * i + 1].idx = 2 * i + 1;
	}
	res = (n > 0) ? BtydRadixSort(a, b, 2 * n, 64) : a;
	for (int64 i = 0; i < 2 * n; i++)
	{
		int64		r = res[i].idx / 2;

		if (i == 0 || res[i].key != res[i - 1].key)
			tv[nt++] = (res[i].idx % 2 == 0) ? rows[r].T : rows[r].tx;
		if (res[i].idx % 2 == 0)
			iT[r] = (int32) (nt - 1);
		else
			itx[r] = (int32) (nt - 1);
	}
	pfree(a);
	pfree(b);
	*tvp = tv;
	*ntp = nt;
}

/* Sort a state's rows in place (t_x = 0 for x = 0 first, as BgnbdCompress does) */
void
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
		BtydSortRows(rows, st->n);
	}
	else if (st->rowsize == sizeof(GgRow))
		BtydSortGgRows((GgRow *) st->rows, st->n);
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
	memset(&h, 0, sizeof(h));
	h.n = st->n;
	h.rowsize = (int32) st->rowsize;
	h.sorted = 1;
	h.nstart = st->nstart;
	memcpy(h.start, st->start, sizeof(h.start));
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
		h.nstart < 0 || h.nstart > 4 ||
		VARSIZE_ANY_EXHDR(in) != sizeof(h) + h.n * h.rowsize)
		elog(ERROR, "corrupt btyd aggregate state");
	st = palloc0(sizeof(BtydState));
	st->n = h.n;
	st->cap = Max(h.n, 1);
	st->rowsize = h.rowsize;
	st->sorted = (h.sorted != 0);
	st->nstart = h.nstart;
	memcpy(st->start, h.start, sizeof(st->start));
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
	/* the warm start, from whichever part saw it (every row carries the same) */
	if (s1 != NULL && s1->nstart > 0)
	{
		st->nstart = s1->nstart;
		memcpy(st->start, s1->start, sizeof(st->start));
	}
	else
	{
		st->nstart = s2->nstart;
		memcpy(st->start, s2->start, sizeof(st->start));
	}
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

/*
 * Start of a large BG/NBD-shaped fit (MBG/NBD, Pareto/NBD share the data
 * shape): the optimum on every k-th row of the sorted rows, about
 * BTYD_SUBSAMPLE_ROWS of them, so that the optimiser needs far fewer
 * passes over the full data.  The rows are sorted in place (their multiset
 * is unchanged), so the subsample, and the fit, do not depend on the input
 * order.  Returns start[] (log-parameters), or NULL for small data or when
 * the subsample fit does not converge (then the fit starts from 0).
 */
#define BTYD_SUBSAMPLE_MIN		200000	/* rows below which there is no subsample */
#define BTYD_SUBSAMPLE_ROWS		50000

/*
 * The subsample of BtydSubsampleStart, compressed into d (allocated in
 * fitcxt); false for small data (nothing is built).
 */
bool
BtydSubsample(BtydState *st, MemoryContext fitcxt, BgnbdData *d)
{
	MemoryContext oldcxt;
	BtydState	sub;
	int64		k;

	if (st->n < BTYD_SUBSAMPLE_MIN || st->rowsize != sizeof(BgnbdRow))
		return false;
	BtydStateSort(st);
	oldcxt = MemoryContextSwitchTo(fitcxt);
	k = st->n / BTYD_SUBSAMPLE_ROWS;
	sub.n = st->n / k;
	sub.cap = sub.n;
	sub.rowsize = st->rowsize;
	sub.sorted = true;
	sub.rows = MemoryContextAllocHuge(fitcxt, sub.n * sub.rowsize);
	for (int64 i = 0; i < sub.n; i++)
		memcpy(sub.rows + i * sub.rowsize, st->rows + (i * k + k / 2) * st->rowsize,
			   st->rowsize);
	BgnbdCompress(&sub, d);
	MemoryContextSwitchTo(oldcxt);
	return true;
}

double *
BtydSubsampleStart(BtydState *st, BtydObjective objective, MemoryContext fitcxt,
				   double *start)
{
	MemoryContext oldcxt;
	BgnbdData	d;
	double		fmin;
	bool		converged;
	int			iterations;

	if (!BtydSubsample(st, fitcxt, &d))
		return NULL;
	oldcxt = MemoryContextSwitchTo(fitcxt);
	for (int i = 0; i < 4; i++)
		start[i] = 0.0;
	BtydMinimize(4, objective, &d, start, &fmin, &converged, &iterations);
	MemoryContextSwitchTo(oldcxt);
	return converged ? start : NULL;
}
