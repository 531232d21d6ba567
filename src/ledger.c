/*
 * ledger.c — the hot path of loyalty.earn() and loyalty.redeem()
 *
 * These two calls run once per purchase and per checkout, so their common
 * case is written here against the tables directly (table AM calls plus the
 * executor's index maintenance, much as logical replication's apply worker
 * writes rows) instead of through planned SQL statements: one executor
 * state, the three tables opened once, no plans to revalidate.
 *
 * The common case is: the customer has an account and no debt, the
 * idempotency key is new, and (for redeem) enough points are available.
 * Anything else — a new customer, debt, a replayed or clashing key, too few
 * points, bad input — goes to the SQL implementation (loyalty._earn_sql,
 * loyalty._redeem_sql in 62_rewards.sql), which handles every case and
 * raises the documented errors. Both paths write the same rows.
 *
 * Locking is the SQL path's (see the note at the top of 62_rewards.sql): the
 * customer's accounts row is locked first (RelationFindReplTupleByIndex waits
 * for and follows concurrent updates), and lots and keys are read only after
 * that, with a snapshot taken after the lock was granted. Lots are only ever
 * changed by transactions holding their customer's account lock, so the
 * lots read here cannot change before this transaction ends.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "loyalty.h"

enum
{
	REL_ACCOUNTS,
	REL_LEDGER,
	REL_LOTS,
	NUM_RELS
};

typedef struct LedgerState
{
	EState	   *estate;
	Relation	rel[NUM_RELS];
	ResultRelInfo *rri[NUM_RELS];
	TimestampTz now;
} LedgerState;

/* One lot of the customer, as read for a redemption */
typedef struct Lot
{
	int64		lot_id;
	int64		remaining;
	bool		expires_null;
	TimestampTz expires_at;
	TupleTableSlot *slot;
} Lot;

static void
LedgerOpen(LedgerState *st)
{
	static const char *const names[NUM_RELS] = {"accounts", "ledger", "point_lots"};
	List	   *rtable = NIL;

	/* see this transaction's earlier writes (e.g. by a previous call in the same statement) */
	CommandCounterIncrement();
	st->now = GetCurrentTransactionStartTimestamp();
	st->estate = CreateExecutorState();
	for (int i = 0; i < NUM_RELS; i++)
	{
		RangeTblEntry *rte = makeNode(RangeTblEntry);

		st->rel[i] = table_open(LoyaltyRelid(names[i]), RowExclusiveLock);
		rte->rtekind = RTE_RELATION;
		rte->relid = RelationGetRelid(st->rel[i]);
		rte->relkind = st->rel[i]->rd_rel->relkind;
		rte->rellockmode = RowExclusiveLock;
		rtable = lappend(rtable, rte);
	}
	ExecInitRangeTable(st->estate, rtable);
	for (int i = 0; i < NUM_RELS; i++)
	{
		st->rri[i] = makeNode(ResultRelInfo);
		InitResultRelInfo(st->rri[i], st->rel[i], i + 1, NULL, 0);
		ExecOpenIndices(st->rri[i], false);
	}
	st->estate->es_output_cid = GetCurrentCommandId(true);
	st->estate->es_snapshot = NULL;
}

/* Take the snapshot reads and writes use: after the account lock was granted */
static void
LedgerSnapshot(LedgerState *st)
{
	st->estate->es_snapshot = RegisterSnapshot(GetLatestSnapshot());
}

static void
LedgerClose(LedgerState *st)
{
	if (st->estate->es_snapshot != NULL)
	{
		UnregisterSnapshot(st->estate->es_snapshot);
		st->estate->es_snapshot = NULL;
	}
	for (int i = 0; i < NUM_RELS; i++)
	{
		ExecCloseIndices(st->rri[i]);
		table_close(st->rel[i], NoLock);
	}
	ExecResetTupleTable(st->estate->es_tupleTable, false);
	FreeExecutorState(st->estate);
}

static TupleTableSlot *
LedgerSlot(LedgerState *st, int which)
{
	return table_slot_create(st->rel[which], &st->estate->es_tupleTable);
}

/*
 * Row writes. Like the executor's ExecSimpleRelation* routines, minus the
 * CHECK and NOT NULL evaluation: the rows written here are built from values
 * this file has validated (points > 0, remaining within the lot, every NOT
 * NULL column set), and re-parsing the constraint expressions on every call
 * was a tenth of the call's cost. None of these tables has triggers on the
 * operations used here (the ledger's triggers refuse UPDATE and DELETE).
 */
static void
LedgerInsert(LedgerState *st, int which, TupleTableSlot *slot)
{
	simple_table_tuple_insert(st->rel[which], slot);
	if (st->rri[which]->ri_NumIndices > 0)
		list_free(ExecInsertIndexTuples(st->rri[which], slot, st->estate, false, false, NULL, NIL));
}

static void
LedgerUpdate(LedgerState *st, int which, TupleTableSlot *old, TupleTableSlot *slot)
{
	bool		update_indexes;

	simple_table_tuple_update(st->rel[which], &old->tts_tid, slot, st->estate->es_snapshot, &update_indexes);
	if (update_indexes && st->rri[which]->ri_NumIndices > 0)
		list_free(ExecInsertIndexTuples(st->rri[which], slot, st->estate, true, false, NULL, NIL));
}

static void
LedgerDelete(LedgerState *st, int which, TupleTableSlot *old)
{
	simple_table_tuple_delete(st->rel[which], &old->tts_tid, st->estate->es_snapshot);
}

/* Lock the customer's account row; false if there is none */
static bool
LedgerLockAccount(LedgerState *st, text *customer, TupleTableSlot *account)
{
	Relation	rel = st->rel[REL_ACCOUNTS];
	TupleTableSlot *search = LedgerSlot(st, REL_ACCOUNTS);

	ExecClearTuple(search);
	for (int i = 0; i < search->tts_tupleDescriptor->natts; i++)
		search->tts_isnull[i] = true;
	search->tts_values[LoyaltyAttnum(rel, "customer_id") - 1] = PointerGetDatum(customer);
	search->tts_isnull[LoyaltyAttnum(rel, "customer_id") - 1] = false;
	ExecStoreVirtualTuple(search);
	return RelationFindReplTupleByIndex(rel, LoyaltyRelid("accounts_pkey"),
										LockTupleExclusive, search, account);
}

/* Does any ledger entry, committed or in progress, carry this key? */
static bool
LedgerKeyTaken(LedgerState *st, text *key)
{
	Relation	idx = index_open(LoyaltyRelid("ledger_idempotency_key_key"), RowExclusiveLock);
	SnapshotData dirty;
	IndexScanDesc scan;
	ScanKeyData skey;
	TupleTableSlot *slot = LedgerSlot(st, REL_LEDGER);
	bool		found;

	InitDirtySnapshot(dirty);
	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(key));
	skey.sk_collation = idx->rd_indcollation[0];
	scan = index_beginscan(st->rel[REL_LEDGER], idx, &dirty, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	index_close(idx, NoLock);
	return found;
}

static int64
GetInt64(TupleTableSlot *slot, AttrNumber att)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, att, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

/*
 * Open the tables and lock the customer's account. Returns the locked account,
 * or NULL (tables closed again) when the SQL path must take the call: no
 * account, debt, or a key already used (committed or in progress).
 */
static TupleTableSlot *
LedgerBegin(LedgerState *st, text *customer, text *key)
{
	TupleTableSlot *account;

	LedgerOpen(st);
	account = LedgerSlot(st, REL_ACCOUNTS);
	if (!LedgerLockAccount(st, customer, account) ||
		GetInt64(account, LoyaltyAttnum(st->rel[REL_ACCOUNTS], "debt")) != 0 ||
		LedgerKeyTaken(st, key))
	{
		LedgerClose(st);
		return NULL;
	}
	LedgerSnapshot(st);
	return account;
}

/* Insert the ledger entry; returns its id */
static int64
LedgerInsertEntry(LedgerState *st, text *customer, const char *kind, int64 points, text *key,
				  text *reason, bool avail_null, TimestampTz avail, bool exp_null, TimestampTz exp)
{
	Relation	rel = st->rel[REL_LEDGER];
	TupleTableSlot *slot = LedgerSlot(st, REL_LEDGER);
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	id_att = LoyaltyAttnum(rel, "entry_id");
	int64		id = nextval_internal(getIdentitySequence(RelationGetRelid(rel), id_att, false), false);

	ExecClearTuple(slot);
	for (int i = 0; i < desc->natts; i++)
		slot->tts_isnull[i] = true;
#define SET(name, value) \
	do { AttrNumber a_ = LoyaltyAttnum(rel, name); slot->tts_values[a_ - 1] = (value); slot->tts_isnull[a_ - 1] = false; } while (0)
	SET("entry_id", Int64GetDatum(id));
	SET("customer_id", PointerGetDatum(customer));
	SET("kind", CStringGetTextDatum(kind));
	SET("points", Int64GetDatum(points));
	SET("idempotency_key", PointerGetDatum(key));
	if (reason)
		SET("reason", PointerGetDatum(reason));
	if (!avail_null)
		SET("available_at", TimestampTzGetDatum(avail));
	if (!exp_null)
		SET("expires_at", TimestampTzGetDatum(exp));
	SET("created_by", CStringGetTextDatum(GetUserNameFromId(GetSessionUserId(), false)));
	SET("created_at", TimestampTzGetDatum(st->now));
#undef SET
	ExecStoreVirtualTuple(slot);
	LedgerInsert(st, REL_LEDGER, slot);
	return id;
}


/* a + b, or 22003: a balance or total never wraps (issue 11, finding 5) */
static int64
LedgerAdd(int64 a, int64 b, const char *what)
{
	int64		r;

	if (pg_add_s64_overflow(a, b, &r))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("points out of range: the customer's %s would exceed %lld", what, (long long) PG_INT64_MAX),
				 errhint("Points per entry are capped by loyalty.max_points_per_entry; correct a balance with loyalty.adjust_points().")));
	return r;
}

/* Write back the account with its balance and one lifetime total changed */
static void
LedgerUpdateAccount(LedgerState *st, TupleTableSlot *account, int64 delta, const char *total, int64 total_delta)
{
	Relation	rel = st->rel[REL_ACCOUNTS];
	TupleTableSlot *slot = LedgerSlot(st, REL_ACCOUNTS);
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	balance = LoyaltyAttnum(rel, "balance");
	AttrNumber	tot = LoyaltyAttnum(rel, total);

	slot_getallattrs(account);
	ExecClearTuple(slot);
	for (int i = 0; i < desc->natts; i++)
	{
		slot->tts_values[i] = account->tts_values[i];
		slot->tts_isnull[i] = account->tts_isnull[i];
	}
	slot->tts_values[balance - 1] = Int64GetDatum(LedgerAdd(GetInt64(account, balance), delta, "balance"));
	slot->tts_values[tot - 1] = Int64GetDatum(LedgerAdd(GetInt64(account, tot), total_delta, total));
	slot->tts_values[LoyaltyAttnum(rel, "updated_at") - 1] = TimestampTzGetDatum(st->now);
	ExecStoreVirtualTuple(slot);
	LedgerUpdate(st, REL_ACCOUNTS, account, slot);
}

/* Hand the call to the SQL implementation (as the extension's owner) */
static Datum
LedgerFallback(const char *fn, FunctionCallInfo fcinfo)
{
	Oid			argtypes[6] = {TEXTOID, INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		values[6];
	char		nulls[6];
	int			nargs = PG_NARGS();
	StringInfoData sql;
	Oid			save_userid;
	int			save_sec_context;
	Oid			owner;
	bool		isnull;
	Datum		result;
	int64		id;

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT loyalty.%s(", fn);
	for (int i = 0; i < nargs; i++)
	{
		values[i] = PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		appendStringInfo(&sql, "%s$%d", i > 0 ? ", " : "", i + 1);
	}
	appendStringInfoChar(&sql, ')');

	{
		Relation	ledger = table_open(LoyaltyRelid("ledger"), AccessShareLock);

		owner = ledger->rd_rel->relowner;
		table_close(ledger, AccessShareLock);
	}
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	SPI_connect();
	if (SPI_execute_with_args(sql.data, nargs, argtypes, values, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "%s failed", fn);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	id = isnull ? 0 : DatumGetInt64(result);
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec_context);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_INT64(id);
}

/* The arguments every call shares; false if they need the SQL path's checks */
static bool
LedgerArgsOk(FunctionCallInfo fcinfo)
{
	text	   *customer,
			   *key;
	char	   *k;

	/* above the per-entry cap: the SQL path raises */
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(3) || PG_GETARG_INT64(1) <= 0 ||
		PG_GETARG_INT64(1) > loyalty_max_points_per_entry)
		return false;
	customer = PG_GETARG_TEXT_PP(0);
	key = PG_GETARG_TEXT_PP(3);
	k = text_to_cstring(key);
	/* long keys, control characters, Unicode spaces (capture.c's key rule): the SQL path refuses them */
	if (LoyaltyKeyProblem(VARDATA_ANY(customer), VARSIZE_ANY_EXHDR(customer)) != NULL ||
		LoyaltyKeyProblemMax(k, strlen(k), 500) != NULL)
		return false;
	/* empty or blank customers and keys, reserved keys: the SQL path says why */
	if (VARSIZE_ANY_EXHDR(customer) == 0 || strspn(text_to_cstring(customer), " ") == VARSIZE_ANY_EXHDR(customer) ||
		strspn(k, " ") == strlen(k) || LoyaltyKeyReserved(k, strlen(k)))
		return false;
	return true;
}

PG_FUNCTION_INFO_V1(ledger_earn);

/* loyalty.earn(customer_id, points, reason, idempotency_key, expires_at, available_at) */
Datum
ledger_earn(PG_FUNCTION_ARGS)
{
	LedgerState st;
	TupleTableSlot *account;
	text	   *customer;
	text	   *key;
	int64		points;
	bool		exp_null = PG_ARGISNULL(4);
	bool		avail_null = PG_ARGISNULL(5);
	TimestampTz exp = exp_null ? 0 : PG_GETARG_TIMESTAMPTZ(4);
	TimestampTz avail = avail_null ? 0 : PG_GETARG_TIMESTAMPTZ(5);
	int64		id;

	if (!LedgerArgsOk(fcinfo) ||
		(!exp_null && (TIMESTAMP_NOT_FINITE(exp) || exp <= GetCurrentTransactionStartTimestamp())) ||
		(!avail_null && (TIMESTAMP_NOT_FINITE(avail) || (!exp_null && avail >= exp))))
		return LedgerFallback("_earn_sql", fcinfo);
	customer = PG_GETARG_TEXT_PP(0);
	points = PG_GETARG_INT64(1);
	key = PG_GETARG_TEXT_PP(3);

	account = LedgerBegin(&st, customer, key);
	if (account == NULL)
		return LedgerFallback("_earn_sql", fcinfo);

	id = LedgerInsertEntry(&st, customer, "earn", points, key, PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2),
						   avail_null, avail, exp_null, exp);

	/* the lot */
	{
		Relation	rel = st.rel[REL_LOTS];
		TupleTableSlot *slot = LedgerSlot(&st, REL_LOTS);

		ExecClearTuple(slot);
		for (int i = 0; i < slot->tts_tupleDescriptor->natts; i++)
			slot->tts_isnull[i] = true;
		slot->tts_values[LoyaltyAttnum(rel, "lot_id") - 1] = Int64GetDatum(id);
		slot->tts_values[LoyaltyAttnum(rel, "customer_id") - 1] = PointerGetDatum(customer);
		slot->tts_values[LoyaltyAttnum(rel, "points") - 1] = Int64GetDatum(points);
		slot->tts_values[LoyaltyAttnum(rel, "remaining") - 1] = Int64GetDatum(points);
		slot->tts_values[LoyaltyAttnum(rel, "available_at") - 1] = TimestampTzGetDatum(avail_null ? DT_NOBEGIN : avail);
		slot->tts_isnull[LoyaltyAttnum(rel, "lot_id") - 1] = false;
		slot->tts_isnull[LoyaltyAttnum(rel, "customer_id") - 1] = false;
		slot->tts_isnull[LoyaltyAttnum(rel, "points") - 1] = false;
		slot->tts_isnull[LoyaltyAttnum(rel, "remaining") - 1] = false;
		slot->tts_isnull[LoyaltyAttnum(rel, "available_at") - 1] = false;
		if (!exp_null)
		{
			slot->tts_values[LoyaltyAttnum(rel, "expires_at") - 1] = TimestampTzGetDatum(exp);
			slot->tts_isnull[LoyaltyAttnum(rel, "expires_at") - 1] = false;
		}
		ExecStoreVirtualTuple(slot);
		LedgerInsert(&st, REL_LOTS, slot);
	}

	LedgerUpdateAccount(&st, account, points, "lifetime_earned", points);
	LedgerClose(&st);
	PG_RETURN_INT64(id);
}

/* first-expiring first; never-expiring last; then oldest lot (the SQL paths: loyalty._take_points) */
static int
LotCompare(const void *a, const void *b)
{
	const Lot  *x = (const Lot *) a;
	const Lot  *y = (const Lot *) b;

	if (x->expires_null != y->expires_null)
		return x->expires_null ? 1 : -1;
	if (!x->expires_null && x->expires_at != y->expires_at)
		return x->expires_at < y->expires_at ? -1 : 1;
	if (x->lot_id != y->lot_id)
		return x->lot_id < y->lot_id ? -1 : 1;
	return 0;
}

PG_FUNCTION_INFO_V1(ledger_redeem);

/* loyalty.redeem(customer_id, points, reason, idempotency_key) */
Datum
ledger_redeem(PG_FUNCTION_ARGS)
{
	LedgerState st;
	TupleTableSlot *account;
	text	   *customer;
	text	   *key;
	int64		points;
	int64		have = 0;
	int64		left;
	int64		id;
	Lot		   *lots;
	int			nlots = 0;
	int			maxlots = 8;

	if (!LedgerArgsOk(fcinfo))
		return LedgerFallback("_redeem_sql", fcinfo);
	customer = PG_GETARG_TEXT_PP(0);
	points = PG_GETARG_INT64(1);
	key = PG_GETARG_TEXT_PP(3);

	account = LedgerBegin(&st, customer, key);
	if (account == NULL)
		return LedgerFallback("_redeem_sql", fcinfo);

	/* the customer's spendable lots, read after the account lock was granted */
	lots = palloc(sizeof(Lot) * maxlots);
	{
		Relation	rel = st.rel[REL_LOTS];
		Relation	idx = index_open(LoyaltyRelid("point_lots_customer_idx"), RowExclusiveLock);
		Snapshot	snap;
		AttrNumber	a_id = LoyaltyAttnum(rel, "lot_id");
		AttrNumber	a_rem = LoyaltyAttnum(rel, "remaining");
		AttrNumber	a_avail = LoyaltyAttnum(rel, "available_at");
		AttrNumber	a_exp = LoyaltyAttnum(rel, "expires_at");
		IndexScanDesc scan;
		ScanKeyData skey;
		TupleTableSlot *slot = LedgerSlot(&st, REL_LOTS);

		snap = st.estate->es_snapshot;
		ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(customer));
		skey.sk_collation = idx->rd_indcollation[0];
		scan = index_beginscan(rel, idx, snap, 1, 0);
		index_rescan(scan, &skey, 1, NULL, 0);
		while (index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			bool		isnull;
			Datum		d;
			Lot		   *lot;

			if (DatumGetTimestampTz(slot_getattr(slot, a_avail, &isnull)) > st.now)
				continue;		/* pending */
			d = slot_getattr(slot, a_exp, &isnull);
			if (!isnull && DatumGetTimestampTz(d) <= st.now)
				continue;		/* expired, not yet processed by expire_points */
			if (nlots == maxlots)
			{
				maxlots *= 2;
				lots = repalloc(lots, sizeof(Lot) * maxlots);
			}
			lot = &lots[nlots++];
			lot->lot_id = GetInt64(slot, a_id);
			lot->remaining = GetInt64(slot, a_rem);
			lot->expires_null = isnull;
			lot->expires_at = isnull ? 0 : DatumGetTimestampTz(d);
			lot->slot = LedgerSlot(&st, REL_LOTS);
			ExecCopySlot(lot->slot, slot);
			lot->slot->tts_tid = slot->tts_tid;
			have = LedgerAdd(have, lot->remaining, "available points");
		}
		index_endscan(scan);
		index_close(idx, NoLock);
	}
	if (have < points)
	{
		LedgerClose(&st);
		return LedgerFallback("_redeem_sql", fcinfo);	/* raises LY001 */
	}

	id = LedgerInsertEntry(&st, customer, "redeem", -points, key, PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2),
						   true, 0, true, 0);

	/* spend first-expiring lots first: delete a lot spent in full, else lower it */
	qsort(lots, nlots, sizeof(Lot), LotCompare);
	left = points;
	for (int i = 0; i < nlots && left > 0; i++)
	{
		Lot		   *lot = &lots[i];

		if (lot->remaining <= left)
		{
			LedgerDelete(&st, REL_LOTS, lot->slot);
			left -= lot->remaining;
		}
		else
		{
			TupleTableSlot *slot = LedgerSlot(&st, REL_LOTS);
			AttrNumber	a_rem = LoyaltyAttnum(st.rel[REL_LOTS], "remaining");

			slot_getallattrs(lot->slot);
			ExecClearTuple(slot);
			for (int j = 0; j < slot->tts_tupleDescriptor->natts; j++)
			{
				slot->tts_values[j] = lot->slot->tts_values[j];
				slot->tts_isnull[j] = lot->slot->tts_isnull[j];
			}
			slot->tts_values[a_rem - 1] = Int64GetDatum(lot->remaining - left);
			ExecStoreVirtualTuple(slot);
			LedgerUpdate(&st, REL_LOTS, lot->slot, slot);
			left = 0;
		}
	}

	LedgerUpdateAccount(&st, account, -points, "lifetime_redeemed", points);
	LedgerClose(&st);
	PG_RETURN_INT64(id);
}

int			loyalty_max_points_per_entry = 100000000;

/* Define the ledger's settings */
void
LoyaltyLedgerInit(void)
{
	DefineCustomIntVariable("loyalty.max_points_per_entry",
							"Most points one ledger entry may earn, redeem or adjust.",
							"Larger requests are refused (22023); balances and totals never wrap.",
							&loyalty_max_points_per_entry, 100000000, 1, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
}
