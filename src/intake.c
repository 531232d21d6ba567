/*
 * intake.c — row trigger that captures a tracked shop table's changes
 *
 * The trigger turns the shop's row into a loyalty.events row (a snapshot of the
 * order: ref, customer, amount, time, status). It must never make the shop's
 * write fail: a row loyalty cannot use is still captured, with the problem
 * noted, and is rejected later by loyalty.apply_events() into
 * loyalty.rejected_rows. Validation of values (NULL customer, negative amount,
 * ...) happens there, in one place for triggers and backfill alike.
 *
 * Speed: this runs inside every order insert of the shop, so the event row is
 * written with heap_insert() straight into loyalty.events, which has no index
 * (the drain sorts by event_id), rather than through SPI and the executor.
 * Should the table ever have an index, the SPI path keeps it consistent.
 * The function is neither SECURITY DEFINER nor has a SET clause (each costs a
 * GUC save/restore per row): it looks nothing up through search_path, and
 * heap_insert() needs no privilege.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

/* trigger arguments, as written by loyalty.track_orders() */
enum
{
	ARG_SOURCE_ID,
	ARG_CUSTOMER,
	ARG_AMOUNT,
	ARG_ORDERED_AT,
	ARG_ORDER_ID,
	ARG_STATUS,
	NUM_ARGS
};

#define NUM_EVENT_PARAMS 8

typedef struct CapturedRow
{
	Datum		values[NUM_EVENT_PARAMS];
	char		nulls[NUM_EVENT_PARAMS];
	const char *problem;
} CapturedRow;

static SPIPlanPtr InsertEventPlan = NULL;


/* Attribute number of a column by name, or InvalidAttrNumber */
static AttrNumber
IntakeColumn(TupleDesc tupdesc, const char *name)
{
	if (name == NULL || name[0] == '\0')
		return InvalidAttrNumber;
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return InvalidAttrNumber;
}

/* Column value as text (any type, via its output function), or NULL */
static text *
IntakeText(HeapTuple tuple, TupleDesc tupdesc, AttrNumber attnum)
{
	bool		isnull;
	Datum		d;
	Oid			typoutput;
	bool		typisvarlena;
	Oid			typid;

	d = heap_getattr(tuple, attnum, tupdesc, &isnull);
	if (isnull)
		return NULL;
	typid = TupleDescAttr(tupdesc, attnum - 1)->atttypid;
	getTypeOutputInfo(typid, &typoutput, &typisvarlena);
	return cstring_to_text(OidOutputFunctionCall(typoutput, d));
}

/* Column value converted to numeric; false if the type is not a number */
static bool
IntakeNumeric(HeapTuple tuple, TupleDesc tupdesc, AttrNumber attnum, Datum *result, bool *isnull)
{
	Datum		d = heap_getattr(tuple, attnum, tupdesc, isnull);

	if (*isnull)
		return true;
	switch (getBaseType(TupleDescAttr(tupdesc, attnum - 1)->atttypid))
	{
		case NUMERICOID:
			*result = d;
			return true;
		case INT2OID:
			*result = DirectFunctionCall1(int2_numeric, d);
			return true;
		case INT4OID:
			*result = DirectFunctionCall1(int4_numeric, d);
			return true;
		case INT8OID:
			*result = DirectFunctionCall1(int8_numeric, d);
			return true;
		case FLOAT4OID:
			*result = DirectFunctionCall1(float4_numeric, d);
			return true;
		case FLOAT8OID:
			*result = DirectFunctionCall1(float8_numeric, d);
			return true;
		default:
			return false;
	}
}

/* Column value converted to timestamptz; false if the type is not a time */
static bool
IntakeTimestamp(HeapTuple tuple, TupleDesc tupdesc, AttrNumber attnum, Datum *result, bool *isnull)
{
	Datum		d = heap_getattr(tuple, attnum, tupdesc, isnull);

	if (*isnull)
		return true;
	switch (getBaseType(TupleDescAttr(tupdesc, attnum - 1)->atttypid))
	{
		case TIMESTAMPTZOID:
			*result = d;
			return true;
		case TIMESTAMPOID:
			*result = DirectFunctionCall1(timestamp_timestamptz, d);
			return true;
		case DATEOID:
			*result = DirectFunctionCall1(date_timestamptz, d);
			return true;
		default:
			return false;
	}
}

/* Snapshot one row version into event parameters (source_id, op set by caller) */
static void
IntakeCapture(CapturedRow *row, HeapTuple tuple, TupleDesc tupdesc, char **args)
{
	AttrNumber	customer = IntakeColumn(tupdesc, args[ARG_CUSTOMER]);
	AttrNumber	amount = IntakeColumn(tupdesc, args[ARG_AMOUNT]);
	AttrNumber	ordered_at = IntakeColumn(tupdesc, args[ARG_ORDERED_AT]);
	AttrNumber	order_id = IntakeColumn(tupdesc, args[ARG_ORDER_ID]);
	AttrNumber	status = IntakeColumn(tupdesc, args[ARG_STATUS]);
	text	   *t;
	bool		isnull;

	for (int i = 2; i < NUM_EVENT_PARAMS; i++)
		row->nulls[i] = 'n';
	row->problem = NULL;

	if (order_id == InvalidAttrNumber || customer == InvalidAttrNumber ||
		amount == InvalidAttrNumber || ordered_at == InvalidAttrNumber ||
		(args[ARG_STATUS][0] != '\0' && status == InvalidAttrNumber))
	{
		row->problem = "a tracked column was renamed or dropped; run loyalty.track_orders() again";
		if (order_id != InvalidAttrNumber && (t = IntakeText(tuple, tupdesc, order_id)) != NULL)
		{
			row->values[2] = PointerGetDatum(t);
			row->nulls[2] = ' ';
		}
		return;
	}

	if ((t = IntakeText(tuple, tupdesc, order_id)) != NULL)
	{
		row->values[2] = PointerGetDatum(t);
		row->nulls[2] = ' ';
	}
	if ((t = IntakeText(tuple, tupdesc, customer)) != NULL)
	{
		row->values[3] = PointerGetDatum(t);
		row->nulls[3] = ' ';
	}
	if (!IntakeNumeric(tuple, tupdesc, amount, &row->values[4], &isnull))
		row->problem = "amount column is no longer a number";
	else if (!isnull)
		row->nulls[4] = ' ';
	if (!IntakeTimestamp(tuple, tupdesc, ordered_at, &row->values[5], &isnull))
		row->problem = "order time column is no longer a timestamp";
	else if (!isnull)
		row->nulls[5] = ' ';
	if (status != InvalidAttrNumber && (t = IntakeText(tuple, tupdesc, status)) != NULL)
	{
		row->values[6] = PointerGetDatum(t);
		row->nulls[6] = ' ';
	}
}

/* Did any tracked column change between two row versions? */
static bool
IntakeChanged(HeapTuple oldtup, HeapTuple newtup, TupleDesc tupdesc, char **args)
{
	for (int a = ARG_CUSTOMER; a <= ARG_STATUS; a++)
	{
		AttrNumber	attnum = IntakeColumn(tupdesc, args[a]);
		Form_pg_attribute att;
		bool		oldnull,
					newnull;
		Datum		oldd,
					newd;

		if (attnum == InvalidAttrNumber)
		{
			if (a == ARG_STATUS && args[a][0] == '\0')
				continue;
			return true;		/* let the capture report the problem */
		}
		att = TupleDescAttr(tupdesc, attnum - 1);
		oldd = heap_getattr(oldtup, attnum, tupdesc, &oldnull);
		newd = heap_getattr(newtup, attnum, tupdesc, &newnull);
		if (oldnull != newnull)
			return true;
		if (!oldnull && !datumIsEqual(oldd, newd, att->attbyval, att->attlen))
			return true;
	}
	return false;
}

/* Insert one captured row into loyalty.events (columns in table order) */
static void
IntakeInsert(int32 source_id, char op, CapturedRow *row)
{
	Relation	rel;
	Datum		values[NUM_EVENT_PARAMS + 2];
	bool		nulls[NUM_EVENT_PARAMS + 2];
	HeapTuple	tup;
	Oid			nsp;
	Oid			events_relid;
	Oid			events_seqid;

	row->values[0] = Int32GetDatum(source_id);
	row->nulls[0] = ' ';
	row->values[1] = CharGetDatum(op);
	row->nulls[1] = ' ';
	if (row->problem)
	{
		row->values[7] = CStringGetTextDatum(row->problem);
		row->nulls[7] = ' ';
	}
	else
		row->nulls[7] = 'n';

	/* syscache lookups: cheap, and right even after the extension is recreated */
	nsp = get_namespace_oid("loyalty", false);
	events_relid = get_relname_relid("events", nsp);
	events_seqid = get_relname_relid("events_event_id_seq", nsp);
	if (!OidIsValid(events_relid) || !OidIsValid(events_seqid))
		elog(ERROR, "loyalty: table loyalty.events is missing");

	rel = table_open(events_relid, RowExclusiveLock);
	if (RelationGetDescr(rel)->natts != NUM_EVENT_PARAMS + 2 || rel->rd_rel->relhasindex)
	{
		/*
		 * Not the layout this code writes directly: go through SQL, as the
		 * table's owner (the shop's role need not be allowed to write
		 * loyalty's tables), the way referential integrity triggers do.
		 */
		int			ret;
		Oid			save_userid;
		int			save_sec_context;
		Oid			owner = rel->rd_rel->relowner;

		table_close(rel, RowExclusiveLock);
		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
		SPI_connect();
		if (InsertEventPlan == NULL)
		{
			Oid			argtypes[NUM_EVENT_PARAMS] = {INT4OID, CHAROID, TEXTOID, TEXTOID,
			NUMERICOID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
			SPIPlanPtr	plan;

			plan = SPI_prepare("INSERT INTO loyalty.events (source_id, op, order_ref, customer_id, amount, ordered_at, status, problem) "
							   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", NUM_EVENT_PARAMS, argtypes);
			if (plan == NULL)
				elog(ERROR, "loyalty: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			SPI_keepplan(plan);
			InsertEventPlan = plan;
		}
		ret = SPI_execute_plan(InsertEventPlan, row->values, row->nulls, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "loyalty: could not capture order change: %s", SPI_result_code_string(ret));
		SPI_finish();
		SetUserIdAndSecContext(save_userid, save_sec_context);
		return;
	}

	/* event_id, source_id, op, order_ref, customer_id, amount, ordered_at, status, problem, captured_at */
	values[0] = Int64GetDatum(nextval_internal(events_seqid, false));
	nulls[0] = false;
	for (int i = 0; i < NUM_EVENT_PARAMS; i++)
	{
		values[i + 1] = row->values[i];
		nulls[i + 1] = (row->nulls[i] == 'n');
	}
	values[NUM_EVENT_PARAMS + 1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	nulls[NUM_EVENT_PARAMS + 1] = false;

	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	heap_insert(rel, tup, GetCurrentCommandId(true), 0, NULL);
	heap_freetuple(tup);
	table_close(rel, RowExclusiveLock);
}

PG_FUNCTION_INFO_V1(capture_order);

/* AFTER ROW trigger on a tracked table (see loyalty.track_orders) */
Datum
capture_order(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	char	  **args;
	int32		source_id;
	CapturedRow newrow;
	CapturedRow oldrow;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("loyalty.capture_order() must be called as a trigger"),
				 errhint("Attach tables with loyalty.track_orders().")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs != NUM_ARGS)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("loyalty.capture_order() must be an AFTER ROW trigger with %d arguments", NUM_ARGS),
				 errhint("Attach tables with loyalty.track_orders().")));

	args = trigdata->tg_trigger->tgargs;
	source_id = pg_strtoint32(args[ARG_SOURCE_ID]);
	tupdesc = RelationGetDescr(trigdata->tg_relation);

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) &&
		!IntakeChanged(trigdata->tg_trigtuple, trigdata->tg_newtuple, tupdesc, args))
		return PointerGetDatum(NULL);

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		IntakeCapture(&newrow, trigdata->tg_trigtuple, tupdesc, args);
		IntakeInsert(source_id, 'u', &newrow);
	}
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		IntakeCapture(&oldrow, trigdata->tg_trigtuple, tupdesc, args);
		oldrow.problem = NULL;
		IntakeInsert(source_id, 'd', &oldrow);
	}
	else
	{
		IntakeCapture(&oldrow, trigdata->tg_trigtuple, tupdesc, args);
		IntakeCapture(&newrow, trigdata->tg_newtuple, tupdesc, args);
		/* the order id changed: the old order is gone */
		if (oldrow.nulls[2] == ' ' &&
			(newrow.nulls[2] != ' ' ||
			 strcmp(TextDatumGetCString(oldrow.values[2]), TextDatumGetCString(newrow.values[2])) != 0))
		{
			oldrow.problem = NULL;
			IntakeInsert(source_id, 'd', &oldrow);
		}
		IntakeInsert(source_id, 'u', &newrow);
	}
	return PointerGetDatum(NULL);
}
