/*
 * rfm.c — RFM bounds and scores
 *
 * Bounds: with B bins, bound k (k = 1..B-1) is the k/B quantile of the
 * customers' values, taken as the inverse empirical CDF (the value at sorted
 * position ceil(k*N/B)), so every bound is an observed value. A value's score is
 * 1 + the number of bounds strictly below it: equal values always share a score,
 * whatever their order, and each score holds about N/B customers unless ties
 * make that impossible. Recency is reversed (fewer days = higher score).
 * Fixed mode takes the B-1 thresholds from loyalty.rfm_config instead.
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "access/heapam.h"
#include "access/nbtree.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "loyalty.h"

#define RFM_MAX_BINS 10
#define RFM_BATCH 10000
#define RFM_MULTI 1000			/* rows per heap multi-insert (as COPY) */

typedef struct RfmBounds
{
	int			bins;
	double		r[RFM_MAX_BINS - 1];
	double		f[RFM_MAX_BINS - 1];
	double		m[RFM_MAX_BINS - 1];
} RfmBounds;

typedef struct RfmSegments
{
	int			nsegments;
	char	  **names;			/* names[i]; "Other" at index nsegments */
	int		   *cell;			/* [r-1][f-1][m-1] -> segment index */
} RfmSegments;

/* Batch of changed scores and consumed queue entries, flushed via SPI */
typedef struct RfmBatch
{
	int			n;
	Datum		ids[RFM_BATCH];
	Datum		r[RFM_BATCH];
	Datum		f[RFM_BATCH];
	Datum		m[RFM_BATCH];
	Datum		seg[RFM_BATCH];
} RfmBatch;

/* Queue entries (seq) consumed by this scoring run, deleted at its end */
typedef struct RfmSeqs
{
	int64		n;
	int64		cap;
	Datum	   *seqs;
} RfmSeqs;

/* Remember one consumed queue entry */
static void
RfmAddSeq(RfmSeqs *q, Datum seq)
{
	if (q->n == q->cap)
	{
		q->cap = Max(q->cap * 2, 1024);
		q->seqs = q->seqs ? repalloc_huge(q->seqs, sizeof(Datum) * q->cap) : palloc(sizeof(Datum) * q->cap);
	}
	q->seqs[q->n++] = seq;
}

/* 1 + number of bounds strictly below v */
static inline int
RfmBin(double v, const double *bounds, int nbounds)
{
	int			s = 1;

	for (int k = 0; k < nbounds; k++)
		if (v > bounds[k])
			s++;
	return s;
}

/* qsort comparator for doubles */
static int
RfmCompareDouble(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return (x > y) - (x < y);
}

/*
 * Put the k-th smallest of vals[lo..hi] at position k (quickselect, Hoare
 * partition, so runs of equal values split evenly); everything left of k is
 * <= vals[k] and everything right is >= it. Falls back to sorting the range
 * when the partitions keep coming out lopsided, so it never goes quadratic.
 */
static void
RfmSelect(double *vals, int64 lo, int64 hi, int64 k)
{
	int			budget = 64;

	while (hi > lo)
	{
		double		a = vals[lo],
					b = vals[lo + (hi - lo) / 2],
					c = vals[hi];
		double		pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
		int64		i = lo - 1,
					j = hi + 1;

		if (--budget == 0)
		{
			qsort(vals + lo, hi - lo + 1, sizeof(double), RfmCompareDouble);
			return;
		}
		for (;;)
		{
			double		t;

			do
				i++;
			while (vals[i] < pivot);
			do
				j--;
			while (vals[j] > pivot);
			if (i >= j)
				break;
			t = vals[i];
			vals[i] = vals[j];
			vals[j] = t;
		}
		/* now vals[lo..j] <= pivot <= vals[j+1..hi] */
		if (k <= j)
			hi = j;
		else
			lo = j + 1;
	}
}

/*
 * Quantile bounds (inverse empirical CDF: the value at sorted position
 * ceil(k*n/bins)) of n values, reordering vals. Selection, not a full sort:
 * each bound is selected in the part right of the previous one.
 */
static void
RfmQuantiles(double *vals, int64 n, int bins, double *bounds)
{
	int64		lo = 0;

	for (int k = 1; k < bins; k++)
	{
		int64		pos = Max((int64) ceil((double) k * n / bins), 1) - 1;

		RfmSelect(vals, lo, n - 1, pos);
		bounds[k - 1] = vals[pos];
		lo = pos;
	}
}

/* Copy a float8[] into dst (exactly n elements) or fail */
static void
RfmArrayToDoubles(Datum arr, double *dst, int n, const char *what)
{
	ArrayType  *a = DatumGetArrayTypeP(arr);
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;

	deconstruct_array(a, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, &nelems);
	if (nelems != n)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s has %d thresholds, %d bins need %d", what, nelems, n + 1, n),
				 errhint("Set them again with loyalty.configure_rfm().")));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s contains a NULL threshold", what),
					 errhint("Set them again with loyalty.configure_rfm().")));
		dst[i] = DatumGetFloat8(elems[i]);
	}
}

/* A float8[] datum of n doubles */
static Datum
RfmDoublesToArray(const double *src, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = Float8GetDatum(src[i]);
	return PointerGetDatum(construct_array(elems, n, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* Build the score-cell -> segment table from loyalty.segment_rules (first match wins) */
static void
RfmLoadSegments(RfmSegments *segs, int bins)
{
	int			ncells = bins * bins * bins;
	int			ret;

	ret = SPI_execute("SELECT segment, r_min, r_max, f_min, f_max, m_min, m_max "
					  "FROM loyalty.segment_rules ORDER BY position", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading segment rules failed: %s", SPI_result_code_string(ret));

	segs->nsegments = (int) SPI_processed;
	segs->names = palloc(sizeof(char *) * (segs->nsegments + 1));
	segs->cell = palloc(sizeof(int) * ncells);
	for (int c = 0; c < ncells; c++)
		segs->cell[c] = -1;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		int			lim[6];

		segs->names[i] = SPI_getvalue(tup, td, 1);
		for (int j = 0; j < 6; j++)
			lim[j] = DatumGetInt32(SPI_getbinval(tup, td, j + 2, &isnull));
		for (int r = 1; r <= bins; r++)
			for (int f = 1; f <= bins; f++)
				for (int m = 1; m <= bins; m++)
				{
					int			c = ((r - 1) * bins + (f - 1)) * bins + (m - 1);

					if (segs->cell[c] < 0 &&
						r >= lim[0] && r <= lim[1] && f >= lim[2] && f <= lim[3] &&
						m >= lim[4] && m <= lim[5])
						segs->cell[c] = (int) i;
				}
	}
	segs->names[segs->nsegments] = pstrdup("Other");
	for (int c = 0; c < ncells; c++)
		if (segs->cell[c] < 0)
			segs->cell[c] = segs->nsegments;
}

/* Scores and segment of one customer's recency (days), frequency and monetary */
static inline void
RfmScore(const RfmBounds *b, const RfmSegments *segs, double rv, double fv, double mv,
		 int *r, int *f, int *m, int *segi)
{
	*r = b->bins + 1 - RfmBin(rv, b->r, b->bins - 1);
	*f = RfmBin(fv, b->f, b->bins - 1);
	*m = RfmBin(mv, b->m, b->bins - 1);
	*segi = segs->cell[((*r - 1) * b->bins + (*f - 1)) * b->bins + (*m - 1)];
}

/* Days from ts to as_of: whole UTC days, as everywhere (days.c) */
static inline double
RfmDays(TimestampTz as_of, TimestampTz ts)
{
	return (double) LoyaltyUtcDays(ts, as_of);
}

/* One customer in a full pass: its values and the scores stored now */
typedef struct RfmRow
{
	Datum		id;				/* text, in the rows' memory context */
	double		rv;				/* recency, days */
	double		fv;				/* frequency */
	double		mv;				/* monetary */
	int16		old_r;			/* 0 when not scored yet */
	int16		old_f;
	int16		old_m;
	int16		old_seg;		/* index into RfmSegments.names, -1 unknown */
	ItemPointerData old_tid;	/* stored row (direct pass only) */
} RfmRow;

/* Index of a segment name, -1 when it is not one of today's names */
static int16
RfmSegmentIndex(RfmSegments *segs, const char *name)
{
	for (int i = 0; i <= segs->nsegments; i++)
		if (strcmp(segs->names[i], name) == 0)
			return (int16) i;
	return -1;
}

/*
 * Full pass: read every customer once, in customer_id order, with the scores
 * stored now (a merge join of two primary keys). About 80 bytes a customer.
 */
static RfmRow *
RfmLoadRows(TimestampTz as_of, RfmSegments *segs, int64 *nrows)
{
	Portal		portal;
	int64		n = 0;
	int64		cap = 1024;
	RfmRow	   *rows = palloc(sizeof(RfmRow) * cap);
	SPIPlanPtr	plan;
	MemoryContext rowctx = CurrentMemoryContext;

	plan = SPI_prepare("SELECT s.customer_id, s.last_order_at, s.orders::float8, s.net_spend::float8, "
					   "r.r_score, r.f_score, r.m_score, r.segment "
					   "FROM loyalty.customer_state s "
					   "LEFT JOIN loyalty.customer_rfm r ON r.customer_id = s.customer_id "
					   "ORDER BY s.customer_id", 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		MemoryContext oldctx;

		SPI_cursor_fetch(portal, true, RFM_BATCH);
		if (SPI_processed == 0)
			break;
		if (n + (int64) SPI_processed > cap)
		{
			while (n + (int64) SPI_processed > cap)
				cap *= 2;
			rows = repalloc_huge(rows, sizeof(RfmRow) * cap);
		}
		oldctx = MemoryContextSwitchTo(rowctx);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	td = SPI_tuptable->tupdesc;
			bool		isnull;
			bool		norfm;
			RfmRow	   *row = &rows[n++];

			row->id = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(tup, td, 1, &isnull)));
			row->rv = RfmDays(as_of, DatumGetTimestampTz(SPI_getbinval(tup, td, 2, &isnull)));
			row->fv = DatumGetFloat8(SPI_getbinval(tup, td, 3, &isnull));
			row->mv = DatumGetFloat8(SPI_getbinval(tup, td, 4, &isnull));
			row->old_r = row->old_f = row->old_m = 0;
			row->old_seg = -1;
			(void) SPI_getbinval(tup, td, 5, &norfm);
			if (!norfm)
			{
				char	   *seg = SPI_getvalue(tup, td, 8);

				row->old_r = DatumGetInt16(SPI_getbinval(tup, td, 5, &isnull));
				row->old_f = DatumGetInt16(SPI_getbinval(tup, td, 6, &isnull));
				row->old_m = DatumGetInt16(SPI_getbinval(tup, td, 7, &isnull));
				row->old_seg = RfmSegmentIndex(segs, seg);
				pfree(seg);
			}
		}
		MemoryContextSwitchTo(oldctx);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	*nrows = n;
	return rows;
}

/*
 * The same quantile bounds as RfmQuantiles when every value is a whole number
 * in [lo, lo + span): one pass counting each value, then the value at sorted
 * position ceil(k*n/bins) read off the running count. Recency (days) and
 * frequency (orders) always qualify; for a million customers this replaces
 * a selection over the values with a count over a few hundred slots.
 */
static void
RfmQuantilesCounted(const RfmRow *rows, int64 n, int dim, double lo, int64 span, int bins, double *bounds)
{
	int64	   *counts = palloc_extended(sizeof(int64) * span, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	int64		below = 0;		/* values less than lo + slot */
	int64		slot = 0;

	for (int64 i = 0; i < n; i++)
		counts[(int64) ((dim == 0 ? rows[i].rv : dim == 1 ? rows[i].fv : rows[i].mv) - lo)]++;
	for (int k = 1; k < bins; k++)
	{
		int64		pos = Max((int64) ceil((double) k * n / bins), 1) - 1;

		/* the value at sorted position pos: the first slot whose count reaches past pos */
		while (below + counts[slot] <= pos)
			below += counts[slot++];
		bounds[k - 1] = lo + (double) slot;
	}
	pfree(counts);
}

/* Quantile bounds of all rows (B-1 per dimension) */
static void
RfmComputeBounds(RfmBounds *b, RfmRow *rows, int64 n)
{
	double	   *v = NULL;

	for (int dim = 0; dim < 3; dim++)
	{
		double	   *bounds = dim == 0 ? b->r : dim == 1 ? b->f : b->m;
		double		lo = 0,
					hi = 0;
		bool		whole = true;

		/* whole numbers (not -0, NaN or infinite) below 2^52 in a range at most n + 1024 wide? */
		for (int64 i = 0; i < n && whole; i++)
		{
			double		x = dim == 0 ? rows[i].rv : dim == 1 ? rows[i].fv : rows[i].mv;

			if (!(x == floor(x)) || isinf(x) || (x == 0 && signbit(x)))
				whole = false;
			else if (i == 0)
				lo = hi = x;
			else if (x < lo)
				lo = x;
			else if (x > hi)
				hi = x;
		}
		if (whole && hi - lo < (double) n + 1024 && fabs(lo) < 4503599627370496.0 && fabs(hi) < 4503599627370496.0)
		{
			RfmQuantilesCounted(rows, n, dim, lo, (int64) (hi - lo) + 1, b->bins, bounds);
			continue;
		}
		if (v == NULL)
			v = palloc_extended(sizeof(double) * Max(n, 1), MCXT_ALLOC_HUGE);
		for (int64 i = 0; i < n; i++)
			v[i] = dim == 0 ? rows[i].rv : dim == 1 ? rows[i].fv : rows[i].mv;
		RfmQuantiles(v, n, b->bins, bounds);
	}
	if (v != NULL)
		pfree(v);
}

/* Write bounds in force */
static void
RfmStoreBounds(RfmBounds *b, const char *mode, int64 customers, TimestampTz as_of)
{
	Oid			types[7] = {INT4OID, TEXTOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID, INT8OID, TIMESTAMPTZOID};
	Datum		values[7];
	int			ret;

	values[0] = Int32GetDatum(b->bins);
	values[1] = CStringGetTextDatum(mode);
	values[2] = RfmDoublesToArray(b->r, b->bins - 1);
	values[3] = RfmDoublesToArray(b->f, b->bins - 1);
	values[4] = RfmDoublesToArray(b->m, b->bins - 1);
	values[5] = Int64GetDatum(customers);
	values[6] = TimestampTzGetDatum(as_of);
	ret = SPI_execute_with_args("INSERT INTO loyalty.rfm_bounds AS b (bins, mode, recency_bounds, frequency_bounds, monetary_bounds, customers, computed_at) "
								"VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (singleton) DO UPDATE SET "
								"bins = excluded.bins, mode = excluded.mode, recency_bounds = excluded.recency_bounds, "
								"frequency_bounds = excluded.frequency_bounds, monetary_bounds = excluded.monetary_bounds, "
								"customers = excluded.customers, computed_at = excluded.computed_at",
								7, types, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "storing RFM bounds failed: %s", SPI_result_code_string(ret));
}

/* Load the bounds in force; false if there are none (or for another bin count) */
static bool
RfmLoadBounds(RfmBounds *b)
{
	int			ret;
	TupleDesc	td;
	HeapTuple	tup;
	bool		isnull;

	ret = SPI_execute("SELECT bins, recency_bounds, frequency_bounds, monetary_bounds FROM loyalty.rfm_bounds", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading RFM bounds failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return false;
	td = SPI_tuptable->tupdesc;
	tup = SPI_tuptable->vals[0];
	if (DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull)) != b->bins)
		return false;
	RfmArrayToDoubles(SPI_getbinval(tup, td, 2, &isnull), b->r, b->bins - 1, "recency bounds");
	RfmArrayToDoubles(SPI_getbinval(tup, td, 3, &isnull), b->f, b->bins - 1, "frequency bounds");
	RfmArrayToDoubles(SPI_getbinval(tup, td, 4, &isnull), b->m, b->bins - 1, "monetary bounds");
	return true;
}

/*
 * Write a batch of scores: new rows with a plain INSERT, changed rows with an
 * UPDATE. Callers hold the refresh lock, so no other scorer adds rows meanwhile;
 * rows arrive in customer_id order, which keeps the primary key's inserts on
 * its rightmost page (much cheaper than random inserts or INSERT ON CONFLICT).
 */
static void
RfmFlush(RfmBatch *batch, bool insert, TimestampTz as_of)
{
	Oid			types[6] = {TEXTARRAYOID, INT2ARRAYOID, INT2ARRAYOID, INT2ARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID};
	Datum		values[6];
	int			ret;

	if (batch->n == 0)
		return;
	values[0] = PointerGetDatum(construct_array(batch->ids, batch->n, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(batch->r, batch->n, INT2OID, 2, true, TYPALIGN_SHORT));
	values[2] = PointerGetDatum(construct_array(batch->f, batch->n, INT2OID, 2, true, TYPALIGN_SHORT));
	values[3] = PointerGetDatum(construct_array(batch->m, batch->n, INT2OID, 2, true, TYPALIGN_SHORT));
	values[4] = PointerGetDatum(construct_array(batch->seg, batch->n, TEXTOID, -1, false, TYPALIGN_INT));
	values[5] = TimestampTzGetDatum(as_of);
	if (insert)
		ret = SPI_execute_with_args("INSERT INTO loyalty.customer_rfm (customer_id, r_score, f_score, m_score, segment, scored_at) "
									"SELECT u.*, $6 FROM unnest($1, $2, $3, $4, $5) AS u",
									6, types, values, NULL, false, 0);
	else
		ret = SPI_execute_with_args("UPDATE loyalty.customer_rfm c SET r_score = u.r, f_score = u.f, m_score = u.m, "
									"segment = u.seg, scored_at = $6 "
									"FROM unnest($1, $2, $3, $4, $5) AS u(id, r, f, m, seg) WHERE c.customer_id = u.id",
									6, types, values, NULL, false, 0);
	if (ret != (insert ? SPI_OK_INSERT : SPI_OK_UPDATE))
		elog(ERROR, "writing RFM scores failed: %s", SPI_result_code_string(ret));
	batch->n = 0;
}

/* Delete the queue entries read (only those: an entry added since stays) */
static void
RfmDeleteSeqs(RfmSeqs *q)
{
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1];
	int			ret;

	if (q->n == 0)
		return;
	values[0] = PointerGetDatum(construct_array(q->seqs, (int) q->n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	ret = SPI_execute_with_args("DELETE FROM loyalty.score_queue WHERE seq = ANY ($1)", 1, types, values, NULL, false, 0);
	if (ret != SPI_OK_DELETE)
		elog(ERROR, "clearing the score queue failed: %s", SPI_result_code_string(ret));
}

/*
 * Direct full pass. The SPI pass above reads through a merge join and writes
 * through INSERT/UPDATE statements; for a million customers most of its time
 * goes to the executor per row. This pass reads both tables in C (whole, by
 * sequential scans, joined through a hash of the id: RfmDirectHashLoadRows;
 * or both primary keys in order, merged, under a nondeterministic collation:
 * RfmDirectLoadRows) and writes the way COPY FROM does: new rows in
 * heap multi-inserts of RFM_MULTI, then their index entries; changed rows by
 * a table-AM update, with index entries only when the update is not HOT.
 *
 * It is used only when it does exactly what the SQL would (RfmDirectOpen):
 * READ COMMITTED (under REPEATABLE READ / SERIALIZABLE the SQL path raises the
 * serialization errors), the caller may read and write the tables, and
 * customer_rfm is a plain table as the extension creates it: no triggers (the
 * extension defines none; a shop's own would not fire here), no row security,
 * no CHECK or generated columns, no extra columns. Otherwise the SPI pass runs.
 *
 * Concurrency: callers hold the refresh lock (74200, 2), so no other scorer
 * writes customer_rfm meanwhile; the only other writer is the intake, which
 * deletes the scores of a customer left with no orders. Reads use the
 * caller's snapshot (rows this pass writes carry a later command id, so they
 * are never read back). An update that finds its row deleted since skips it,
 * as UPDATE does in READ COMMITTED. Unique checks run in index insertion as
 * in INSERT.
 */
typedef struct RfmDirect
{
	Relation	state;			/* loyalty.customer_state, AccessShareLock */
	Relation	state_pk;
	/* customer_state's columns, looked up by name (the table may be altered) */
	AttrNumber	state_id;
	AttrNumber	state_last;
	AttrNumber	state_orders;
	AttrNumber	state_spend;
	AttrNumber	state_natts;	/* the highest of the four */
	Relation	rfm;			/* loyalty.customer_rfm, RowExclusiveLock */
	Relation	rfm_pk;
	Snapshot	snapshot;
	FmgrInfo   *cmp;			/* the primary keys' order */
	Oid			collation;
	bool		bytewise_eq;	/* equal bytes imply equal keys */
	/* writing */
	EState	   *estate;
	ResultRelInfo *rri;
	BulkInsertState bistate;
	CommandId	cid;
	TupleTableSlot *slots[RFM_MULTI];
	int			nslots;
	TupleTableSlot *upd;
	bool		update_checked;
} RfmDirect;

/* Attribute attnum of rel is named name and of type typid */
static bool
RfmHasColumn(Relation rel, int attnum, const char *name, Oid typid)
{
	TupleDesc	td = RelationGetDescr(rel);
	Form_pg_attribute att;

	if (attnum > td->natts)
		return false;
	att = TupleDescAttr(td, attnum - 1);
	return !att->attisdropped && att->atttypid == typid && strcmp(NameStr(att->attname), name) == 0;
}

/* Attribute number of column name of rel if it has type typid, else InvalidAttrNumber */
static AttrNumber
RfmColumn(Relation rel, const char *name, Oid typid)
{
	AttrNumber	attnum = (AttrNumber) attnameAttNum(rel, name, false);

	if (attnum == InvalidAttrNumber || TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid != typid)
		return InvalidAttrNumber;
	return attnum;
}

/* The primary key of rel: a btree on column keyatt alone; NULL if not so */
static Relation
RfmOpenPrimaryKey(Relation rel, AttrNumber keyatt)
{
	Oid			pk = RelationGetPrimaryKeyIndex(rel);
	Relation	idx;

	if (!OidIsValid(pk))
		return NULL;
	idx = index_open(pk, AccessShareLock);
	if (idx->rd_rel->relam != BTREE_AM_OID || idx->rd_index->indnkeyatts != 1 ||
		idx->rd_index->indnatts != 1 || idx->rd_index->indkey.values[0] != keyatt)
	{
		index_close(idx, AccessShareLock);
		return NULL;
	}
	return idx;
}

/* Why the direct pass cannot run, or NULL when it can */
static const char *
RfmDirectBlocker(RfmDirect *d)
{
	TupleDesc	td = RelationGetDescr(d->rfm);

	if (IsolationUsesXactSnapshot())
		return "transaction isolation above READ COMMITTED";
	if (d->state->rd_rel->relkind != RELKIND_RELATION || d->rfm->rd_rel->relkind != RELKIND_RELATION)
		return "not plain tables";
	if (pg_class_aclcheck(RelationGetRelid(d->state), GetUserId(), ACL_SELECT) != ACLCHECK_OK ||
		pg_class_aclcheck(RelationGetRelid(d->rfm), GetUserId(), ACL_SELECT | ACL_INSERT | ACL_UPDATE) != ACLCHECK_OK)
		return "privileges";
	if (d->rfm->trigdesc != NULL)
		return "triggers on loyalty.customer_rfm";
	if (d->state->rd_rel->relrowsecurity || d->rfm->rd_rel->relrowsecurity)
		return "row level security";
	if (td->constr != NULL && (td->constr->num_check > 0 || td->constr->has_generated_stored))
		return "check constraints or generated columns on loyalty.customer_rfm";
	if (td->natts != 6 ||
		!RfmHasColumn(d->rfm, 1, "customer_id", TEXTOID) || !RfmHasColumn(d->rfm, 2, "r_score", INT2OID) ||
		!RfmHasColumn(d->rfm, 3, "f_score", INT2OID) || !RfmHasColumn(d->rfm, 4, "m_score", INT2OID) ||
		!RfmHasColumn(d->rfm, 5, "segment", TEXTOID) || !RfmHasColumn(d->rfm, 6, "scored_at", TIMESTAMPTZOID))
		return "loyalty.customer_rfm has other columns";
	if (d->state_id == InvalidAttrNumber || d->state_last == InvalidAttrNumber ||
		d->state_orders == InvalidAttrNumber || d->state_spend == InvalidAttrNumber)
		return "loyalty.customer_state lacks customer_id, last_order_at, orders or net_spend of the expected types";
	if (d->state_pk == NULL || d->rfm_pk == NULL ||
		d->state_pk->rd_opfamily[0] != d->rfm_pk->rd_opfamily[0] ||
		d->state_pk->rd_indcollation[0] != d->rfm_pk->rd_indcollation[0])
		return "primary keys differ";
	return NULL;
}

/* Open both tables and their keys; false (all closed again) if the SPI pass must run */
static bool
RfmDirectOpen(RfmDirect *d)
{
	Oid			nsp = get_namespace_oid("loyalty", false);
	Oid			state_id = get_relname_relid("customer_state", nsp);
	Oid			rfm_id = get_relname_relid("customer_rfm", nsp);
	const char *blocker;

	memset(d, 0, sizeof(*d));
	if (!OidIsValid(state_id) || !OidIsValid(rfm_id))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"loyalty.%s\" does not exist", OidIsValid(state_id) ? "customer_rfm" : "customer_state"),
				 errhint("A table of the extension was dropped or renamed by hand: restore it from a backup (pg_dump keeps loyalty's tables).")));
	d->state = table_open(state_id, AccessShareLock);
	d->rfm = table_open(rfm_id, RowExclusiveLock);
	d->state_id = RfmColumn(d->state, "customer_id", TEXTOID);
	d->state_last = RfmColumn(d->state, "last_order_at", TIMESTAMPTZOID);
	d->state_orders = RfmColumn(d->state, "orders", INT4OID);
	d->state_spend = RfmColumn(d->state, "net_spend", NUMERICOID);
	d->state_natts = Max(Max(d->state_id, d->state_last), Max(d->state_orders, d->state_spend));
	d->state_pk = d->state_id == InvalidAttrNumber ? NULL : RfmOpenPrimaryKey(d->state, d->state_id);
	d->rfm_pk = RfmOpenPrimaryKey(d->rfm, 1);
	blocker = RfmDirectBlocker(d);
	if (blocker != NULL)
	{
		elog(DEBUG1, "RFM scores written through SQL: %s", blocker);
		if (d->state_pk)
			index_close(d->state_pk, NoLock);
		if (d->rfm_pk)
			index_close(d->rfm_pk, NoLock);
		table_close(d->rfm, NoLock);
		table_close(d->state, NoLock);
		return false;
	}
	d->cmp = index_getprocinfo(d->state_pk, 1, BTORDER_PROC);
	d->collation = d->state_pk->rd_indcollation[0];
	d->bytewise_eq = !OidIsValid(d->collation) || get_collation_isdeterministic(d->collation);
	d->snapshot = RegisterSnapshot(GetActiveSnapshot());
	return true;
}

/* Order of two customer ids as in the primary keys */
static inline int
RfmDirectCompare(RfmDirect *d, Datum a, Datum b)
{
	if (d->bytewise_eq)
	{
		struct varlena *va = (struct varlena *) DatumGetPointer(a);
		struct varlena *vb = (struct varlena *) DatumGetPointer(b);

		if (!VARATT_IS_EXTENDED(va) || VARATT_IS_SHORT(va))
			if (!VARATT_IS_EXTENDED(vb) || VARATT_IS_SHORT(vb))
				if (VARSIZE_ANY_EXHDR(va) == VARSIZE_ANY_EXHDR(vb) &&
					memcmp(VARDATA_ANY(va), VARDATA_ANY(vb), VARSIZE_ANY_EXHDR(va)) == 0)
					return 0;
	}
	return DatumGetInt32(FunctionCall2Coll(d->cmp, d->collation, a, b));
}

/* Customer ids, copied into large blocks (no per-id allocation overhead) */
typedef struct RfmArena
{
	char	   *next;
	Size		left;
} RfmArena;

static Datum
RfmArenaCopyText(RfmArena *a, Datum d)
{
	struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(d));
	Size		len = VARSIZE_ANY(v);
	Size		need = INTALIGN(len);
	char	   *p;

	if (need > a->left)
	{
		a->left = Max(need, 1024 * 1024);
		a->next = palloc(a->left);
	}
	p = a->next;
	memcpy(p, v, len);
	a->next += need;
	a->left -= need;
	return PointerGetDatum(p);
}

/* Segment index of a stored segment text, -1 if not one of today's names */
static int16
RfmSegmentIndexText(RfmSegments *segs, const int *lens, Datum seg)
{
	struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(seg));
	int			len = VARSIZE_ANY_EXHDR(v);

	for (int i = 0; i <= segs->nsegments; i++)
		if (lens[i] == len && memcmp(segs->names[i], VARDATA_ANY(v), len) == 0)
			return (int16) i;
	return -1;
}

static double RfmNumericToDouble(Datum d);

/*
 * Read every customer with its stored scores: both primary keys in order,
 * merged. Same rows as RfmLoadRows, plus where each stored row is.
 */
static RfmRow *
RfmDirectLoadRows(RfmDirect *d, TimestampTz as_of, RfmSegments *segs, int64 *nrows)
{
	int64		n = 0;
	/* sized from the planner's row count (VACUUM/ANALYZE), so rarely regrown */
	int64		cap = Max((int64) (d->state->rd_rel->reltuples * 1.02), 0) + 1024;
	RfmRow	   *rows = palloc_extended(sizeof(RfmRow) * cap, MCXT_ALLOC_HUGE);
	RfmArena	arena = {NULL, 0};
	int		   *seglens = palloc(sizeof(int) * (segs->nsegments + 1));
	MemoryContext tmpctx = AllocSetContextCreate(CurrentMemoryContext, "loyalty rfm read", ALLOCSET_DEFAULT_SIZES);
	TupleTableSlot *sslot = table_slot_create(d->state, NULL);
	TupleTableSlot *rslot = table_slot_create(d->rfm, NULL);
	IndexScanDesc sscan = index_beginscan(d->state, d->state_pk, d->snapshot, 0, 0);
	IndexScanDesc rscan = index_beginscan(d->rfm, d->rfm_pk, d->snapshot, 0, 0);
	bool		have_r;

	for (int i = 0; i <= segs->nsegments; i++)
		seglens[i] = strlen(segs->names[i]);
	index_rescan(sscan, NULL, 0, NULL, 0);
	index_rescan(rscan, NULL, 0, NULL, 0);
	have_r = index_getnext_slot(rscan, ForwardScanDirection, rslot);
	while (index_getnext_slot(sscan, ForwardScanDirection, sslot))
	{
		RfmRow	   *row;
		Datum		id;
		MemoryContext oldctx;

		CHECK_FOR_INTERRUPTS();
		if (n == cap)
		{
			cap *= 2;
			rows = repalloc_huge(rows, sizeof(RfmRow) * cap);
		}
		row = &rows[n++];
		slot_getsomeattrs(sslot, d->state_natts);
		id = sslot->tts_values[d->state_id - 1];
		row->id = RfmArenaCopyText(&arena, id);
		row->rv = RfmDays(as_of, DatumGetTimestampTz(sslot->tts_values[d->state_last - 1]));
		row->fv = (double) DatumGetInt32(sslot->tts_values[d->state_orders - 1]);
		/* the numeric -> float8 cast of the SQL pass, so both give equal values */
		oldctx = MemoryContextSwitchTo(tmpctx);
		row->mv = RfmNumericToDouble(sslot->tts_values[d->state_spend - 1]);
		MemoryContextSwitchTo(oldctx);
		if ((n & 1023) == 0)
			MemoryContextReset(tmpctx);
		row->old_r = row->old_f = row->old_m = 0;
		row->old_seg = -1;
		ItemPointerSetInvalid(&row->old_tid);

		/* scores of customers without state are skipped, as by the LEFT JOIN */
		while (have_r)
		{
			int			c;

			slot_getsomeattrs(rslot, 5);
			c = RfmDirectCompare(d, rslot->tts_values[0], id);
			if (c > 0)
				break;
			if (c == 0)
			{
				row->old_r = DatumGetInt16(rslot->tts_values[1]);
				row->old_f = DatumGetInt16(rslot->tts_values[2]);
				row->old_m = DatumGetInt16(rslot->tts_values[3]);
				row->old_seg = RfmSegmentIndexText(segs, seglens, rslot->tts_values[4]);
				row->old_tid = rslot->tts_tid;
			}
			have_r = index_getnext_slot(rscan, ForwardScanDirection, rslot);
			if (c == 0)
				break;
		}
	}
	index_endscan(sscan);
	index_endscan(rscan);
	ExecDropSingleTupleTableSlot(sslot);
	ExecDropSingleTupleTableSlot(rslot);
	MemoryContextDelete(tmpctx);
	pfree(seglens);
	*nrows = n;
	return rows;
}

/*
 * numeric -> float8 exactly as numeric_float8 (numeric_out, then float8in:
 * the decimal value, correctly rounded), without the text. numeric's on-disk
 * format (src/backend/utils/adt/numeric.c, unchanged since 9.1): a 2-byte
 * header (short form: sign, display scale dscale and weight; long form: sign
 * and dscale, then a 2-byte weight), then base-10000 digits, the first one
 * worth 10000^weight. The value times 10^dscale is a whole number m; when
 * m <= 2^53 and dscale <= 22 both m and 10^dscale are exact doubles and one
 * IEEE division gives the correctly rounded m / 10^dscale, which is what
 * strtod returns for the decimal text (Clinger 1990, "How to read floating
 * point numbers accurately", the fast path). Anything else (NaN, infinities,
 * more digits) goes through numeric_float8 itself.
 */
#define RFM_NUMERIC_SIGN_MASK	0xC000
#define RFM_NUMERIC_NEG			0x4000
#define RFM_NUMERIC_SHORT		0x8000
#define RFM_NUMERIC_SPECIAL		0xC000
#define RFM_NUMERIC_SHORT_SIGN_MASK 0x2000
#define RFM_NUMERIC_SHORT_DSCALE_MASK 0x1F80
#define RFM_NUMERIC_SHORT_DSCALE_SHIFT 7
#define RFM_NUMERIC_SHORT_WEIGHT_SIGN_MASK 0x0040
#define RFM_NUMERIC_SHORT_WEIGHT_MASK 0x003F
#define RFM_NUMERIC_DSCALE_MASK 0x3FFF
#define RFM_TWO_53				UINT64CONST(9007199254740992)

static const double RfmPow10[23] = {
	1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14,
	1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
};

static double
RfmNumericToDouble(Datum d)
{
	struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(d));
	const char *p = VARDATA_ANY(v);
	int			len = VARSIZE_ANY_EXHDR(v);
	uint16		header;
	bool		neg;
	int			dscale;
	int			weight;
	const char *digits;
	int			ndigits;
	uint64		m = 0;
	int			e10;
	double		result;

	if (len < 2)
		goto slow;
	memcpy(&header, p, sizeof(uint16));
	if ((header & RFM_NUMERIC_SIGN_MASK) == RFM_NUMERIC_SPECIAL)
		goto slow;
	if ((header & RFM_NUMERIC_SIGN_MASK) == RFM_NUMERIC_SHORT)
	{
		neg = (header & RFM_NUMERIC_SHORT_SIGN_MASK) != 0;
		dscale = (header & RFM_NUMERIC_SHORT_DSCALE_MASK) >> RFM_NUMERIC_SHORT_DSCALE_SHIFT;
		weight = ((header & RFM_NUMERIC_SHORT_WEIGHT_SIGN_MASK) ? ~RFM_NUMERIC_SHORT_WEIGHT_MASK : 0) |
			(header & RFM_NUMERIC_SHORT_WEIGHT_MASK);
		digits = p + sizeof(uint16);
	}
	else
	{
		int16		w;

		if (len < 4)
			goto slow;
		neg = (header & RFM_NUMERIC_SIGN_MASK) == RFM_NUMERIC_NEG;
		dscale = header & RFM_NUMERIC_DSCALE_MASK;
		memcpy(&w, p + sizeof(uint16), sizeof(int16));
		weight = w;
		digits = p + 2 * sizeof(uint16);
	}
	ndigits = (int) ((p + len - digits) / sizeof(uint16));
	if (dscale > 22)
		goto slow;
	/* m = the digits as one whole number, times 10^(4 (weight - ndigits + 1) + dscale) */
	for (int i = 0; i < ndigits; i++)
	{
		uint16		dg;

		memcpy(&dg, digits + i * sizeof(uint16), sizeof(uint16));
		if (m > (RFM_TWO_53 - dg) / 10000)
			goto slow;
		m = m * 10000 + dg;
	}
	e10 = 4 * (weight - ndigits + 1) + dscale;
	for (; e10 > 0; e10--)
	{
		if (m > RFM_TWO_53 / 10)
			goto slow;
		m *= 10;
	}
	for (; e10 < 0; e10++)
	{
		/* the digits beyond dscale are zeros in a stored numeric; if not, the slow way */
		if (m % 10 != 0)
			goto slow;
		m /= 10;
	}
	result = (double) m / RfmPow10[dscale];
	return neg ? -result : result;

slow:
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8, d));
}

/*
 * The hashed read (RfmDirectHashLoadRows) finds each customer's stored
 * scores by id in an open-addressing table of 8-byte slots: the id's hash in
 * the high half, 1 + the index of its row in the low half (0: empty),
 * linear probing. Used only when the keys' collation is deterministic, so
 * that equal keys are equal bytes (texteq) and a hash of the bytes finds them.
 */
typedef struct RfmIndex
{
	uint64	   *slots;
	uint64		mask;			/* number of slots - 1 (a power of 2) */
	uint64		used;
} RfmIndex;

static inline uint32
RfmHashText(Datum d)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(d);

	return hash_bytes((const unsigned char *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
}

static inline bool
RfmTextEqual(Datum a, Datum b)
{
	struct varlena *va = (struct varlena *) DatumGetPointer(a);
	struct varlena *vb = (struct varlena *) DatumGetPointer(b);

	return VARSIZE_ANY_EXHDR(va) == VARSIZE_ANY_EXHDR(vb) &&
		memcmp(VARDATA_ANY(va), VARDATA_ANY(vb), VARSIZE_ANY_EXHDR(va)) == 0;
}

/* An empty index with room for at least n ids at half load */
static void
RfmIndexInit(RfmIndex *ix, double n)
{
	uint64		size = 1024;

	while (size < 2 * n)
		size *= 2;
	ix->slots = palloc_extended(sizeof(uint64) * size, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	ix->mask = size - 1;
	ix->used = 0;
}

/* Add row (index) whose id hashes to hash; the table doubles past 3/4 load */
static void
RfmIndexAdd(RfmIndex *ix, uint32 hash, int64 row)
{
	uint64		i;

	if (4 * (ix->used + 1) > 3 * (ix->mask + 1))
	{
		uint64	   *old = ix->slots;
		uint64		oldsize = ix->mask + 1;

		ix->slots = palloc_extended(sizeof(uint64) * oldsize * 2, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
		ix->mask = oldsize * 2 - 1;
		for (uint64 j = 0; j < oldsize; j++)
			if (old[j] != 0)
			{
				for (i = (old[j] >> 32) & ix->mask; ix->slots[i] != 0; i = (i + 1) & ix->mask)
					;
				ix->slots[i] = old[j];
			}
		pfree(old);
	}
	for (i = hash & ix->mask; ix->slots[i] != 0; i = (i + 1) & ix->mask)
		;
	ix->slots[i] = ((uint64) hash << 32) | (uint64) (row + 1);
	ix->used++;
}

/*
 * The slots are far larger than the CPU caches and each id's slot is
 * somewhere else: lookups go in batches, every slot of a batch requested
 * from memory first (a prefetch), then every candidate row, so that the
 * cache misses of a batch overlap instead of following one another.
 */
#define RFM_HASH_BATCH 32

#if defined(__GNUC__) || defined(__clang__)
#define RfmPrefetch(p) __builtin_prefetch(p)
#else
#define RfmPrefetch(p) ((void) (p))
#endif

/* One batch of lookups: the row index of each id, or -1 */
static void
RfmIndexLookupBatch(const RfmIndex *ix, const RfmRow *rows, const Datum *ids, const uint32 *hashes,
					int nbatch, int64 *found)
{
	uint64		at[RFM_HASH_BATCH];

	for (int b = 0; b < nbatch; b++)
	{
		uint64		i;

		/* the first slot of this hash (almost always the row sought) */
		for (i = hashes[b] & ix->mask; ix->slots[i] != 0 && (uint32) (ix->slots[i] >> 32) != hashes[b];
			 i = (i + 1) & ix->mask)
			;
		at[b] = i;
		if (ix->slots[i] != 0)
			RfmPrefetch(&rows[(ix->slots[i] & 0xFFFFFFFF) - 1]);
	}
	/* and its id */
	for (int b = 0; b < nbatch; b++)
		if (ix->slots[at[b]] != 0)
			RfmPrefetch(DatumGetPointer(rows[(ix->slots[at[b]] & 0xFFFFFFFF) - 1].id));
	for (int b = 0; b < nbatch; b++)
	{
		uint64		i = at[b];

		found[b] = -1;
		for (; ix->slots[i] != 0; i = (i + 1) & ix->mask)
		{
			int64		row = (int64) (ix->slots[i] & 0xFFFFFFFF) - 1;

			if ((uint32) (ix->slots[i] >> 32) == hashes[b] && RfmTextEqual(rows[row].id, ids[b]))
			{
				found[b] = row;
				break;
			}
		}
	}
}

/*
 * Read every customer with its stored scores, hashed: customer_rfm read
 * whole (a sequential scan), one row each, indexed by id; then
 * customer_state read whole, each customer's values put into its row (a
 * new row when it has no scores yet); rows of stored scores whose customer
 * has no state are dropped, as by the LEFT JOIN. Same rows as
 * RfmDirectLoadRows, in another order. A sequential scan reads each page once,
 * in order, where the index scans fetched each row from its page (following
 * its HOT chain) in key order; at a million customers that was most of the
 * pass.
 *
 * customer_state is still read in key order when most customers have no
 * stored scores yet (the first pass, a restored shop): the new score rows
 * are then inserted in key order, on the primary key's rightmost page, much
 * cheaper than in random order. The estimate (pg_class.reltuples) only
 * chooses the order, never the result.
 */
static RfmRow *
RfmDirectHashLoadRows(RfmDirect *d, TimestampTz as_of, RfmSegments *segs, int64 *nrows)
{
	int64		n = 0;
	int64		nstored;
	int64		kept;
	double		expected = Max(d->state->rd_rel->reltuples, 0);
	int64		cap = (int64) (Max(expected, d->rfm->rd_rel->reltuples) * 1.02) + 1024;
	RfmRow	   *rows = palloc_extended(sizeof(RfmRow) * cap, MCXT_ALLOC_HUGE);
	bool	   *has_state;
	RfmArena	arena = {NULL, 0};
	RfmIndex	ix;
	int		   *seglens = palloc(sizeof(int) * (segs->nsegments + 1));
	MemoryContext tmpctx = AllocSetContextCreate(CurrentMemoryContext, "loyalty rfm read", ALLOCSET_DEFAULT_SIZES);
	TupleTableSlot *sslot = table_slot_create(d->state, NULL);
	TupleTableSlot *rslot = table_slot_create(d->rfm, NULL);
	TableScanDesc rscan;
	TableScanDesc sscan = NULL;
	IndexScanDesc siscan = NULL;
	bool		ordered;
	Datum		ids[RFM_HASH_BATCH];
	uint32		hashes[RFM_HASH_BATCH];
	int64		found[RFM_HASH_BATCH];
	RfmRow		pending[RFM_HASH_BATCH];
	int			nbatch = 0;
	bool		more;

	for (int i = 0; i <= segs->nsegments; i++)
		seglens[i] = strlen(segs->names[i]);

	/* the stored scores, one row each */
	RfmIndexInit(&ix, Max(expected, d->rfm->rd_rel->reltuples));
	rscan = table_beginscan_strat(d->rfm, d->snapshot, 0, NULL, true, false);
	while (table_scan_getnextslot(rscan, ForwardScanDirection, rslot))
	{
		RfmRow	   *row;

		CHECK_FOR_INTERRUPTS();
		if (n == cap)
		{
			cap *= 2;
			rows = repalloc_huge(rows, sizeof(RfmRow) * cap);
		}
		row = &rows[n];
		slot_getsomeattrs(rslot, 5);
		row->id = RfmArenaCopyText(&arena, rslot->tts_values[0]);
		row->old_r = DatumGetInt16(rslot->tts_values[1]);
		row->old_f = DatumGetInt16(rslot->tts_values[2]);
		row->old_m = DatumGetInt16(rslot->tts_values[3]);
		row->old_seg = RfmSegmentIndexText(segs, seglens, rslot->tts_values[4]);
		row->old_tid = rslot->tts_tid;
		hashes[nbatch] = RfmHashText(row->id);
		RfmPrefetch(&ix.slots[hashes[nbatch] & ix.mask]);
		found[nbatch++] = n++;
		if (nbatch == RFM_HASH_BATCH)
		{
			/* distinct ids: the primary key's, under one snapshot */
			for (int b = 0; b < nbatch; b++)
				RfmIndexAdd(&ix, hashes[b], found[b]);
			nbatch = 0;
		}
	}
	for (int b = 0; b < nbatch; b++)
		RfmIndexAdd(&ix, hashes[b], found[b]);
	nbatch = 0;
	table_endscan(rscan);
	nstored = n;
	has_state = palloc_extended(Max(nstored, 1), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);

	/* every customer, in key order while most have no scores yet */
	ordered = (double) nstored < 0.9 * expected;
	if (ordered)
	{
		siscan = index_beginscan(d->state, d->state_pk, d->snapshot, 0, 0);
		index_rescan(siscan, NULL, 0, NULL, 0);
	}
	else
		sscan = table_beginscan_strat(d->state, d->snapshot, 0, NULL, true, false);
	do
	{
		more = ordered ? index_getnext_slot(siscan, ForwardScanDirection, sslot)
			: table_scan_getnextslot(sscan, ForwardScanDirection, sslot);
		if (more)
		{
			RfmRow	   *p = &pending[nbatch];
			MemoryContext oldctx;

			CHECK_FOR_INTERRUPTS();
			slot_getsomeattrs(sslot, d->state_natts);
			p->rv = RfmDays(as_of, DatumGetTimestampTz(sslot->tts_values[d->state_last - 1]));
			p->fv = (double) DatumGetInt32(sslot->tts_values[d->state_orders - 1]);
			oldctx = MemoryContextSwitchTo(tmpctx);
			/* a copy for the batch: the scan moves on from this page */
			ids[nbatch] = PointerGetDatum(pg_detoast_datum_copy((struct varlena *) DatumGetPointer(sslot->tts_values[d->state_id - 1])));
			p->mv = RfmNumericToDouble(sslot->tts_values[d->state_spend - 1]);
			MemoryContextSwitchTo(oldctx);
			hashes[nbatch] = RfmHashText(ids[nbatch]);
			RfmPrefetch(&ix.slots[hashes[nbatch] & ix.mask]);
			nbatch++;
		}
		if (nbatch == RFM_HASH_BATCH || (!more && nbatch > 0))
		{
			RfmIndexLookupBatch(&ix, rows, ids, hashes, nbatch, found);
			for (int b = 0; b < nbatch; b++)
			{
				RfmRow	   *row;

				if (found[b] >= 0)
				{
					row = &rows[found[b]];
					has_state[found[b]] = true;
				}
				else
				{
					/* not scored yet */
					if (n == cap)
					{
						cap *= 2;
						rows = repalloc_huge(rows, sizeof(RfmRow) * cap);
					}
					row = &rows[n++];
					row->id = RfmArenaCopyText(&arena, ids[b]);
					row->old_r = row->old_f = row->old_m = 0;
					row->old_seg = -1;
					ItemPointerSetInvalid(&row->old_tid);
				}
				row->rv = pending[b].rv;
				row->fv = pending[b].fv;
				row->mv = pending[b].mv;
			}
			nbatch = 0;
			MemoryContextReset(tmpctx);
		}
	} while (more);
	if (ordered)
		index_endscan(siscan);
	else
		table_endscan(sscan);

	/* stored scores of customers without state are left alone, as by the LEFT JOIN */
	kept = 0;
	for (int64 i = 0; i < n; i++)
		if (i >= nstored || has_state[i])
			rows[kept++] = rows[i];

	pfree(ix.slots);
	pfree(has_state);
	ExecDropSingleTupleTableSlot(sslot);
	ExecDropSingleTupleTableSlot(rslot);
	MemoryContextDelete(tmpctx);
	pfree(seglens);
	*nrows = kept;
	return rows;
}

/* Set up writing to customer_rfm, as COPY FROM sets up its target */
static void
RfmDirectBeginWrite(RfmDirect *d)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	d->estate = CreateExecutorState();
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(d->rfm);
	rte->relkind = RELKIND_RELATION;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(d->estate, list_make1(rte));
	d->rri = makeNode(ResultRelInfo);
	ExecInitResultRelation(d->estate, d->rri, 1);
	CheckValidResultRel(d->rri, CMD_INSERT);
	ExecOpenIndices(d->rri, false);
	/*
	 * No bulk-write buffer ring (COPY's BulkInsertState): the pages stay in
	 * shared buffers, as with INSERT, since the scores are read right after.
	 */
	d->bistate = NULL;
	d->cid = GetCurrentCommandId(true);
	d->nslots = 0;
}

/* Fill a slot with one score row */
static void
RfmDirectFill(TupleTableSlot *slot, Datum id, int r, int f, int m, Datum seg, TimestampTz as_of)
{
	ExecClearTuple(slot);
	slot->tts_values[0] = id;
	slot->tts_values[1] = Int16GetDatum(r);
	slot->tts_values[2] = Int16GetDatum(f);
	slot->tts_values[3] = Int16GetDatum(m);
	slot->tts_values[4] = seg;
	slot->tts_values[5] = TimestampTzGetDatum(as_of);
	memset(slot->tts_isnull, 0, sizeof(bool) * 6);
	ExecStoreVirtualTuple(slot);
}

/* Insert the buffered new rows: heap first (one WAL record a page), then the key */
static void
RfmDirectFlush(RfmDirect *d)
{
	MemoryContext oldctx;

	if (d->nslots == 0)
		return;
	CHECK_FOR_INTERRUPTS();
	oldctx = MemoryContextSwitchTo(GetPerTupleMemoryContext(d->estate));
	table_multi_insert(d->rfm, d->slots, d->nslots, d->cid, 0, d->bistate);
	for (int i = 0; i < d->nslots; i++)
	{
		list_free(ExecInsertIndexTuples(d->rri, d->slots[i], d->estate, false, false, NULL, NIL));
		ExecClearTuple(d->slots[i]);
	}
	MemoryContextSwitchTo(oldctx);
	ResetPerTupleExprContext(d->estate);
	d->nslots = 0;
}

/* Buffer one new score row */
static void
RfmDirectInsert(RfmDirect *d, Datum id, int r, int f, int m, Datum seg, TimestampTz as_of)
{
	if (d->slots[d->nslots] == NULL)
		d->slots[d->nslots] = table_slot_create(d->rfm, NULL);
	RfmDirectFill(d->slots[d->nslots], id, r, f, m, seg, as_of);
	if (++d->nslots == RFM_MULTI)
		RfmDirectFlush(d);
}

/* Rewrite one stored score row; false if the intake deleted it meanwhile */
static bool
RfmDirectUpdate(RfmDirect *d, ItemPointer tid, Datum id, int r, int f, int m, Datum seg, TimestampTz as_of)
{
	TM_Result	res;
	TM_FailureData tmfd;
	LockTupleMode lockmode;
	bool		update_indexes;
	MemoryContext oldctx;

	if (!d->update_checked)
	{
		CheckValidResultRel(d->rri, CMD_UPDATE);
		d->upd = table_slot_create(d->rfm, NULL);
		d->update_checked = true;
	}
	RfmDirectFill(d->upd, id, r, f, m, seg, as_of);
	oldctx = MemoryContextSwitchTo(GetPerTupleMemoryContext(d->estate));
	res = table_tuple_update(d->rfm, tid, d->upd, d->cid, d->snapshot, InvalidSnapshot,
							 true, &tmfd, &lockmode, &update_indexes);
	if (res == TM_Ok && update_indexes)
		list_free(ExecInsertIndexTuples(d->rri, d->upd, d->estate, true, false, NULL, NIL));
	MemoryContextSwitchTo(oldctx);
	ResetPerTupleExprContext(d->estate);
	switch (res)
	{
		case TM_Ok:
			return true;
		case TM_Deleted:
			return false;
		case TM_Updated:
			/* only a scorer updates these rows, and scorers hold the refresh lock */
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to concurrent update of loyalty.customer_rfm"),
					 errhint("Score through loyalty.refresh(), which takes the refresh lock.")));
			break;
		default:
			elog(ERROR, "unexpected result %d updating loyalty.customer_rfm", (int) res);
	}
	return false;
}

/* Finish writing and close everything RfmDirectOpen opened */
static void
RfmDirectClose(RfmDirect *d)
{
	if (d->estate != NULL)
	{
		RfmDirectFlush(d);
		for (int i = 0; i < RFM_MULTI && d->slots[i] != NULL; i++)
			ExecDropSingleTupleTableSlot(d->slots[i]);
		if (d->upd)
			ExecDropSingleTupleTableSlot(d->upd);
		table_finish_bulk_insert(d->rfm, 0);
		ExecCloseResultRelations(d->estate);
		ExecCloseRangeTableRelations(d->estate);
		FreeExecutorState(d->estate);
		d->estate = NULL;
	}
	UnregisterSnapshot(d->snapshot);
	index_close(d->state_pk, NoLock);
	index_close(d->rfm_pk, NoLock);
	table_close(d->rfm, NoLock);
	table_close(d->state, NoLock);
}

/*
 * The settings in force: bin count and mode into b (with the thresholds in
 * fixed mode); returns the mode, allocated in ctx.
 */
static char *
RfmLoadConfig(RfmBounds *b, MemoryContext ctx)
{
	TupleDesc	td;
	HeapTuple	tup;
	bool		isnull;
	char	   *mode;
	int			ret;

	ret = SPI_execute("SELECT bins, mode, recency_bounds, frequency_bounds, monetary_bounds FROM loyalty.rfm_config", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading loyalty.rfm_config failed: %s", SPI_result_code_string(ret));
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("loyalty.rfm_config must hold exactly one row, it holds " UINT64_FORMAT, SPI_processed),
				 errhint("Restore the default settings with INSERT INTO loyalty.rfm_config DEFAULT VALUES, then change them with loyalty.configure_rfm().")));
	td = SPI_tuptable->tupdesc;
	tup = SPI_tuptable->vals[0];
	b->bins = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
	mode = MemoryContextStrdup(ctx, SPI_getvalue(tup, td, 2));
	if (strcmp(mode, "fixed") == 0)
	{
		for (int c = 3; c <= 5; c++)
		{
			Datum		d = SPI_getbinval(tup, td, c, &isnull);

			if (isnull)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("fixed RFM mode needs thresholds for recency, frequency and monetary"),
						 errhint("Set them with loyalty.configure_rfm(mode => 'fixed', ...).")));
			RfmArrayToDoubles(d, c == 3 ? b->r : c == 4 ? b->f : b->m, b->bins - 1,
							  c == 3 ? "recency_bounds" : c == 4 ? "frequency_bounds" : "monetary_bounds");
		}
	}
	return mode;
}

/*
 * Every queue entry seen now: a full pass covers them, since its rows are
 * read afterwards, with the same snapshot or a newer one (an entry commits
 * with its customer's state change).
 */
static void
RfmReadQueue(RfmSeqs *queue)
{
	bool		isnull;
	int			ret;

	ret = SPI_execute("SELECT seq FROM loyalty.score_queue", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading the score queue failed: %s", SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
		RfmAddSeq(queue, SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
}

/* Add one changed score to its batch (insert or update), flushing a full batch */
static void
RfmBatchAdd(RfmBatch *batch, bool insert, Datum id, int r, int f, int m, Datum seg, TimestampTz as_of)
{
	batch->ids[batch->n] = id;
	batch->r[batch->n] = Int16GetDatum(r);
	batch->f[batch->n] = Int16GetDatum(f);
	batch->m[batch->n] = Int16GetDatum(m);
	batch->seg[batch->n++] = seg;
	if (batch->n == RFM_BATCH)
		RfmFlush(batch, insert, as_of);
}

/*
 * Write the rows whose scores changed, through the direct pass when d is
 * open (direct) or in SPI batches; returns how many changed.
 */
static int64
RfmWriteScores(RfmRow *rows, int64 n, const RfmBounds *bounds, RfmSegments *segs,
			   RfmDirect *d, bool direct, TimestampTz as_of)
{
	RfmBatch   *inserts = palloc(sizeof(RfmBatch));
	RfmBatch   *updates = palloc(sizeof(RfmBatch));
	Datum	   *segtext = palloc(sizeof(Datum) * (segs->nsegments + 1));
	int64		changed = 0;

	inserts->n = updates->n = 0;
	for (int i = 0; i <= segs->nsegments; i++)
		segtext[i] = CStringGetTextDatum(segs->names[i]);
	if (direct)
		RfmDirectBeginWrite(d);
	for (int64 i = 0; i < n; i++)
	{
		RfmRow	   *row = &rows[i];
		int			r,
					f,
					m,
					segi;

		RfmScore(bounds, segs, row->rv, row->fv, row->mv, &r, &f, &m, &segi);
		if (row->old_r == r && row->old_f == f && row->old_m == m && row->old_seg == segi)
			continue;
		if (!direct)
			RfmBatchAdd(row->old_r == 0 ? inserts : updates, row->old_r == 0, row->id, r, f, m, segtext[segi], as_of);
		else if (!ItemPointerIsValid(&row->old_tid))
			RfmDirectInsert(d, row->id, r, f, m, segtext[segi], as_of);
		else if (!RfmDirectUpdate(d, &row->old_tid, row->id, r, f, m, segtext[segi], as_of))
			continue;			/* deleted since by the intake: skipped, as UPDATE does */
		changed++;
	}
	RfmFlush(inserts, true, as_of);
	RfmFlush(updates, false, as_of);
	return changed;
}

/*
 * Full pass: new bounds from every customer (quantile mode), then every
 * customer's scores; the whole queue is consumed.
 */
static int64
RfmFullPass(RfmBounds *bounds, RfmSegments *segs, const char *mode, TimestampTz as_of)
{
	RfmSeqs		queue = {0, 0, NULL};
	RfmRow	   *rows;
	int64		n;
	int64		changed = 0;
	RfmDirect	d;
	bool		direct;

	RfmReadQueue(&queue);
	direct = RfmDirectOpen(&d);
	if (!direct)
		rows = RfmLoadRows(as_of, segs, &n);
	else if (d.bytewise_eq)
		rows = RfmDirectHashLoadRows(&d, as_of, segs, &n);
	else
		rows = RfmDirectLoadRows(&d, as_of, segs, &n);
	if (n == 0)
		SPI_execute("DELETE FROM loyalty.rfm_bounds", false, 0);
	else
	{
		if (strcmp(mode, "quantile") == 0)
			RfmComputeBounds(bounds, rows, n);
		RfmStoreBounds(bounds, mode, n, as_of);
		changed = RfmWriteScores(rows, n, bounds, segs, &d, direct, as_of);
	}
	if (direct)
		RfmDirectClose(&d);
	RfmDeleteSeqs(&queue);
	return changed;
}

/*
 * Queue pass: the customers of the first limit queue entries, against the
 * stored bounds; only the entries read are consumed.
 */
static int64
RfmQueuePass(const RfmBounds *bounds, RfmSegments *segs, TimestampTz as_of, int32 limit)
{
	MemoryContext fnctx = CurrentMemoryContext;
	MemoryContext batchctx;
	RfmSeqs		queue = {0, 0, NULL};
	RfmBatch   *inserts = palloc(sizeof(RfmBatch));
	RfmBatch   *updates = palloc(sizeof(RfmBatch));
	int64		changed = 0;
	SPIPlanPtr	plan;
	Portal		portal;
	bool		isnull;
	Oid			limtype[1] = {INT4OID};
	Datum		limval[1];

	plan = SPI_prepare("SELECT q.customer_id, s.last_order_at, s.orders::float8, s.net_spend::float8, "
					   "r.r_score, r.f_score, r.m_score, r.segment, q.seqs "
					   "FROM (SELECT customer_id, array_agg(seq) AS seqs FROM "
					   "      (SELECT customer_id, seq FROM loyalty.score_queue ORDER BY seq LIMIT $1) q0 "
					   "      GROUP BY customer_id) q "
					   "LEFT JOIN loyalty.customer_state s ON s.customer_id = q.customer_id "
					   "LEFT JOIN loyalty.customer_rfm r ON r.customer_id = q.customer_id "
					   "ORDER BY q.customer_id", 1, limtype);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	limval[0] = Int32GetDatum(limit);
	/*
	 * Read-only: the caller's snapshot, so a caller reading the same entries
	 * in the same statement (loyalty.worker_tick) gets exactly these.
	 */
	portal = SPI_cursor_open(NULL, plan, limval, NULL, true);

	inserts->n = updates->n = 0;
	batchctx = AllocSetContextCreate(CurrentMemoryContext, "loyalty rfm batch", ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		MemoryContext oldctx;

		SPI_cursor_fetch(portal, true, RFM_BATCH);
		if (SPI_processed == 0)
			break;
		oldctx = MemoryContextSwitchTo(batchctx);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	td = SPI_tuptable->tupdesc;
			Datum		id = SPI_getbinval(tup, td, 1, &isnull);
			bool		nostate;
			bool		norfm;
			Datum		seqs;
			bool		noseqs;

			id = PointerGetDatum(PG_DETOAST_DATUM_COPY(id));
			seqs = SPI_getbinval(tup, td, 9, &noseqs);
			if (!noseqs)
			{
				Datum	   *elems;
				bool	   *enulls;
				int			nelems;

				deconstruct_array(DatumGetArrayTypeP(seqs), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
								  &elems, &enulls, &nelems);
				MemoryContextSwitchTo(fnctx);
				for (int e = 0; e < nelems; e++)
					RfmAddSeq(&queue, elems[e]);
				MemoryContextSwitchTo(batchctx);
			}
			(void) SPI_getbinval(tup, td, 2, &nostate);
			if (!nostate)
			{
				int			r,
							f,
							m,
							segi;
				bool		same = false;

				RfmScore(bounds, segs,
						 RfmDays(as_of, DatumGetTimestampTz(SPI_getbinval(tup, td, 2, &isnull))),
						 DatumGetFloat8(SPI_getbinval(tup, td, 3, &isnull)),
						 DatumGetFloat8(SPI_getbinval(tup, td, 4, &isnull)),
						 &r, &f, &m, &segi);

				(void) SPI_getbinval(tup, td, 5, &norfm);
				if (!norfm)
				{
					char	   *oldseg = TextDatumGetCString(SPI_getbinval(tup, td, 8, &isnull));

					same = DatumGetInt16(SPI_getbinval(tup, td, 5, &isnull)) == r &&
						DatumGetInt16(SPI_getbinval(tup, td, 6, &isnull)) == f &&
						DatumGetInt16(SPI_getbinval(tup, td, 7, &isnull)) == m &&
						strcmp(oldseg, segs->names[segi]) == 0;
				}
				if (!same)
				{
					/* at most RFM_BATCH rows per fetch: the batches never fill here */
					RfmBatch   *batch = norfm ? inserts : updates;

					batch->ids[batch->n] = id;
					batch->r[batch->n] = Int16GetDatum(r);
					batch->f[batch->n] = Int16GetDatum(f);
					batch->m[batch->n] = Int16GetDatum(m);
					batch->seg[batch->n++] = CStringGetTextDatum(segs->names[segi]);
					changed++;
				}
			}
		}
		MemoryContextSwitchTo(oldctx);
		SPI_freetuptable(SPI_tuptable);
		RfmFlush(inserts, true, as_of);
		RfmFlush(updates, false, as_of);
		MemoryContextReset(batchctx);
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(batchctx);
	RfmDeleteSeqs(&queue);
	return changed;
}

PG_FUNCTION_INFO_V1(rfm_score);

/*
 * loyalty._rfm_score(full, as_of, limit): score customers; returns how many
 * customers' scores changed. Callers hold the refresh lock (74200, 2).
 */
Datum
rfm_score(PG_FUNCTION_ARGS)
{
	bool		full = PG_ARGISNULL(0) ? true : PG_GETARG_BOOL(0);
	TimestampTz as_of = PG_ARGISNULL(1) ? GetCurrentTransactionStartTimestamp() : PG_GETARG_TIMESTAMPTZ(1);
	int32		limit = PG_ARGISNULL(2) ? 10000 : PG_GETARG_INT32(2);
	RfmBounds	bounds;
	RfmSegments segs;
	char	   *mode;
	int64		changed;

	if (TIMESTAMP_NOT_FINITE(as_of))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as_of must be a finite time"),
				 errhint("Omit it to score as of now().")));
	if (limit < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("limit must be at least 1"),
				 errhint("It is the largest number of queued customers to score.")));

	SPI_connect();
	mode = RfmLoadConfig(&bounds, CurrentMemoryContext);
	if (!full && !RfmLoadBounds(&bounds))
		full = true;			/* nothing to score against yet */
	/* segment names depend on the bin count only, not on the bounds */
	RfmLoadSegments(&segs, bounds.bins);
	changed = full ? RfmFullPass(&bounds, &segs, mode, as_of) : RfmQueuePass(&bounds, &segs, as_of, limit);
	SPI_finish();
	PG_RETURN_INT64(changed);
}

PG_FUNCTION_INFO_V1(rfm_bin);

/* loyalty.rfm_bin(v, bounds, reverse): score of one value */
Datum
rfm_bin(PG_FUNCTION_ARGS)
{
	double		v = PG_GETARG_FLOAT8(0);
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(1);
	bool		reverse = PG_GETARG_BOOL(2);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	double		b[RFM_MAX_BINS];
	int			s;

	if (ARR_NDIM(a) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("bounds must be a one-dimensional array"),
				 errhint("Pass ascending thresholds, e.g. '{1,2,4,8}'.")));
	deconstruct_array(a, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, &n);
	if (n < 1 || n > RFM_MAX_BINS - 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("bounds must hold 1 to %d thresholds, not %d", RFM_MAX_BINS - 1, n),
				 errhint("B bins need B-1 thresholds.")));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("bounds must not contain NULL"),
					 errhint("Pass ascending thresholds, e.g. '{1,2,4,8}'.")));
		b[i] = DatumGetFloat8(elems[i]);
		if (i > 0 && b[i] < b[i - 1])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("bounds must be in ascending order"),
					 errhint("Pass ascending thresholds, e.g. '{1,2,4,8}'.")));
	}
	s = RfmBin(v, b, n);
	PG_RETURN_INT32(reverse ? n + 2 - s : s);
}
