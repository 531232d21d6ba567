/*
 * intake.c — the one capture trigger of every tracked shop table
 *
 * loyalty.capture_row() is attached to the shop's orders table (by
 * loyalty.track_orders), customers table (loyalty.track_customers) and
 * carrier-events table (loyalty.track_shipment_events). It
 * reads only the tracked columns, by attribute number, into typed values and
 * writes one loyalty.events row per row version: a snapshot of the tracked
 * values, not a delta, so applying one twice changes nothing. The order's
 * points, its stage times and promise (operations), its delivery time, a
 * carrier event and the customer's profile are all derived from that event
 * when loyalty.apply_events() applies it, so the shop's write pays for this
 * one trigger.
 *
 * Safety: the trigger never makes the shop's write fail for a bad value: a row
 * loyalty cannot use is still captured with the problem noted and quarantined
 * in loyalty.rejected_rows when applied (value bounds are checked there, in one
 * place for triggers, backfill and replay; see capture.c). It never evaluates
 * code the shop's roles wrote: no cast of the shop's types (a cast to json or
 * text can be replaced by the type's owner), only built-in conversions of
 * built-in types and the type's output function (only a superuser can create
 * a base type). Key, amount and time columns must be of a built-in type
 * (loyalty._capture_type_ok, checked by track_*); a column whose type changed
 * since is captured with a problem instead.
 *
 * Adding a tracked column: append a field to OrderFields with its class, and
 * a trigger argument in loyalty._attach_capture. Triggers created with fewer
 * arguments read the missing fields as untracked.
 *
 * Speed: the event row is written with heap_insert() straight into
 * loyalty.events, which has no index (the drain sorts by event_id), rather
 * than through SPI and the executor. Should the table ever have an index, the
 * SPI path keeps it consistent. The function is neither SECURITY DEFINER nor
 * has a SET clause (each costs a GUC save/restore per row): it looks nothing
 * up through search_path, and heap_insert() needs no privilege.
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
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "loyalty.h"

/* How a tracked column is read */
typedef enum CaptureClass
{
	CC_KEY,						/* built-in text, integer or uuid type, as text */
	CC_AMOUNT,					/* built-in number, as numeric */
	CC_TIME,					/* timestamptz, timestamp or date, as timestamptz */
	CC_DATE,					/* date, timestamp or timestamptz, as date */
	CC_PROMISE,					/* a date as date (under date_name), else as timestamptz */
	CC_DETAIL,					/* jsonb as JSON, text types as {"text": ...} */
	CC_LABEL					/* any type, as text through its output function */
} CaptureClass;

/* Where a field goes in loyalty.events (EV_FIELDS: the fields jsonb, by name) */
enum
{
	EV_SOURCE_ID,
	EV_OP,
	EV_ORDER_REF,
	EV_CUSTOMER,
	EV_AMOUNT,
	EV_ORDERED_AT,
	EV_STATUS,
	EV_PROBLEM,
	EV_FIELDS,
	NUM_EV
};

typedef struct CaptureField
{
	const char *name;			/* the field's name (a key of events.fields) */
	CaptureClass cls;
	int			target;			/* EV_* */
	const char *date_name;		/* CC_PROMISE: the key of a date value */
} CaptureField;

/* The first field identifies the row; trigger arguments follow this order */
static const CaptureField OrderFields[] = {
	{"order_id", CC_KEY, EV_ORDER_REF},
	{"customer", CC_KEY, EV_CUSTOMER},
	{"amount", CC_AMOUNT, EV_AMOUNT},
	{"ordered_at", CC_TIME, EV_ORDERED_AT},
	{"status", CC_LABEL, EV_STATUS},
	{"delivered_at", CC_TIME, EV_FIELDS},
	/* fulfilment (operations, 78_operations_capture.sql) */
	{"paid_at", CC_TIME, EV_FIELDS},
	{"dispatched_at", CC_TIME, EV_FIELDS},
	{"promised_at", CC_PROMISE, EV_FIELDS, "promised_on"},
	{"dispatch_by", CC_TIME, EV_FIELDS},
};
#define NUM_ORDER_FIELDS lengthof(OrderFields)
#define NUM_ORDER_REQUIRED 4	/* order_id .. ordered_at */

static const CaptureField CustomerFields[] = {
	{"customer", CC_KEY, EV_CUSTOMER},
	{"name", CC_LABEL, EV_FIELDS},
	{"email", CC_LABEL, EV_FIELDS},
	{"phone", CC_LABEL, EV_FIELDS},
	{"birthday", CC_DATE, EV_FIELDS},
	{"time_zone", CC_LABEL, EV_FIELDS},
};
#define NUM_CUSTOMER_FIELDS lengthof(CustomerFields)
#define NUM_CUSTOMER_REQUIRED 1

/* A carrier-events table: every row version is an event (append-only) */
static const CaptureField ShipmentFields[] = {
	{"order_id", CC_KEY, EV_ORDER_REF},
	{"event", CC_LABEL, EV_STATUS},
	{"at", CC_TIME, EV_FIELDS},
	{"tracking_code", CC_LABEL, EV_FIELDS},
	{"detail", CC_DETAIL, EV_FIELDS},
};
#define NUM_SHIPMENT_FIELDS lengthof(ShipmentFields)
#define NUM_SHIPMENT_REQUIRED 3

#define MAX_FIELDS 16

/* One kind of tracked table, and the columns its trigger names */
typedef struct CaptureSpec
{
	const CaptureField *fields;
	int			nfields;
	int			nrequired;
	const char *columns[MAX_FIELDS];	/* NULL: not tracked */
	const char *attach;			/* the track_* function, for messages */
	bool		append_only;	/* rows are facts: no delete events */
} CaptureSpec;

typedef struct CapturedRow
{
	Datum		values[NUM_EV];
	bool		isnull[NUM_EV];
	const char *problem;
} CapturedRow;

static SPIPlanPtr InsertEventPlan = NULL;


/* Attribute number of a column by name, or InvalidAttrNumber */
static AttrNumber
CaptureColumn(TupleDesc tupdesc, const char *name)
{
	if (name == NULL)
		return InvalidAttrNumber;
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return InvalidAttrNumber;
}

/* Can a column of this type be read as this class? (Domains only for labels) */
static bool
CaptureTypeOk(Oid typid, CaptureClass cls)
{
	switch (cls)
	{
		case CC_KEY:
			return typid == TEXTOID || typid == VARCHAROID || typid == BPCHAROID ||
				typid == INT2OID || typid == INT4OID || typid == INT8OID || typid == UUIDOID;
		case CC_AMOUNT:
			return typid == NUMERICOID || typid == INT2OID || typid == INT4OID ||
				typid == INT8OID || typid == FLOAT4OID || typid == FLOAT8OID;
		case CC_TIME:
		case CC_DATE:
		case CC_PROMISE:
			return typid == TIMESTAMPTZOID || typid == TIMESTAMPOID || typid == DATEOID;
		case CC_DETAIL:
			return typid == JSONBOID || typid == TEXTOID || typid == VARCHAROID || typid == BPCHAROID;
		case CC_LABEL:
			return true;
	}
	return false;
}

/* Value of a column as text through its type's output function */
static Datum
CaptureText(Datum d, Oid typid)
{
	Oid			typoutput;
	bool		typisvarlena;

	getTypeOutputInfo(typid, &typoutput, &typisvarlena);
	return CStringGetTextDatum(OidOutputFunctionCall(typoutput, d));
}

/* Value of a built-in number type as numeric */
static Datum
CaptureNumeric(Datum d, Oid typid)
{
	switch (typid)
	{
		case INT2OID:
			return DirectFunctionCall1(int2_numeric, d);
		case INT4OID:
			return DirectFunctionCall1(int4_numeric, d);
		case INT8OID:
			return DirectFunctionCall1(int8_numeric, d);
		case FLOAT4OID:
			return DirectFunctionCall1(float4_numeric, d);
		case FLOAT8OID:
			return DirectFunctionCall1(float8_numeric, d);
		default:
			return d;
	}
}

/*
 * Value of a built-in time type as timestamptz. *overflow: outside
 * timestamptz's range (a date after 294276 AD, or a timestamp at either end
 * shifted by the session's zone); timestamp_timestamptz and date_timestamptz
 * would raise there, failing the shop's write.
 */
static Datum
CaptureTimestamp(Datum d, Oid typid, bool *overflow)
{
	int			o = 0;
	Datum		result = d;

	switch (typid)
	{
		case TIMESTAMPOID:
			result = TimestampTzGetDatum(timestamp2timestamptz_opt_overflow(DatumGetTimestamp(d), &o));
			break;
		case DATEOID:
			result = TimestampTzGetDatum(date2timestamptz_opt_overflow(DatumGetDateADT(d), &o));
			break;
		default:
			break;
	}
	*overflow = (o != 0);
	return result;
}

/* Value of a built-in time type as date */
static Datum
CaptureDate(Datum d, Oid typid)
{
	switch (typid)
	{
		case TIMESTAMPOID:
			return DirectFunctionCall1(timestamp_date, d);
		case TIMESTAMPTZOID:
			return DirectFunctionCall1(timestamptz_date, d);
		default:
			return d;
	}
}

/* Add a key to a jsonb object being built */
static void
CapturePushKey(JsonbParseState **state, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &k);
}

/* Add key: value (text or JSON null) to a jsonb object being built */
static void
CapturePushField(JsonbParseState **state, const char *key, const char *value)
{
	JsonbValue	v;

	CapturePushKey(state, key);
	if (value == NULL)
		v.type = jbvNull;
	else
	{
		/* a copy: the parse state keeps the pointer, and time values share one buffer */
		v.type = jbvString;
		v.val.string.val = pstrdup(value);
		v.val.string.len = strlen(value);
	}
	pushJsonbValue(state, WJB_VALUE, &v);
}

/*
 * Add key: a detail value, always a JSON object: a jsonb object as it is,
 * another jsonb value as {"value": v}, a text as {"text": t}. Built-in
 * conversions of built-in types only.
 */
static void
CapturePushDetail(JsonbParseState **state, const char *key, Datum d, Oid typid)
{
	JsonbValue	v;

	CapturePushKey(state, key);
	if (typid == JSONBOID)
	{
		Jsonb	   *jb = DatumGetJsonbP(d);

		if (JB_ROOT_IS_OBJECT(jb))
		{
			v.type = jbvBinary;
			v.val.binary.data = &jb->root;
			v.val.binary.len = VARSIZE(jb) - VARHDRSZ;
			pushJsonbValue(state, WJB_VALUE, &v);
			return;
		}
		pushJsonbValue(state, WJB_BEGIN_OBJECT, NULL);
		CapturePushKey(state, "value");
		if (JB_ROOT_IS_SCALAR(jb))
		{
			if (!JsonbExtractScalar(&jb->root, &v))
				elog(ERROR, "loyalty: could not read a jsonb scalar");
		}
		else
		{
			v.type = jbvBinary;
			v.val.binary.data = &jb->root;
			v.val.binary.len = VARSIZE(jb) - VARHDRSZ;
		}
		pushJsonbValue(state, WJB_VALUE, &v);
		pushJsonbValue(state, WJB_END_OBJECT, NULL);
		return;
	}
	pushJsonbValue(state, WJB_BEGIN_OBJECT, NULL);
	CapturePushField(state, "text", TextDatumGetCString(CaptureText(d, typid)));
	pushJsonbValue(state, WJB_END_OBJECT, NULL);
}

/*
 * Snapshot one row version into an event (source_id and op set by the caller).
 * Never raises for the shop's data: a column that is gone or of a type loyalty
 * no longer reads is a problem of the event.
 */
static void
CaptureRead(CapturedRow *row, HeapTuple tuple, TupleDesc tupdesc, const CaptureSpec *spec)
{
	JsonbParseState *state = NULL;
	bool		have_fields = false;

	for (int i = 0; i < NUM_EV; i++)
	{
		row->values[i] = (Datum) 0;
		row->isnull[i] = true;
	}
	row->problem = NULL;

	for (int f = 0; f < spec->nfields; f++)
	{
		const CaptureField *field = &spec->fields[f];
		AttrNumber	attnum;
		Oid			typid;
		Datum		d;
		bool		isnull;
		Datum		value = (Datum) 0;
		bool		overflow = false;
		char		buf[MAXDATELEN + 1];

		if (spec->columns[f] == NULL)
			continue;			/* not tracked */
		attnum = CaptureColumn(tupdesc, spec->columns[f]);
		if (attnum == InvalidAttrNumber)
		{
			if (row->problem == NULL)
				row->problem = psprintf("tracked column \"%s\" was renamed or dropped; run %s again",
										spec->columns[f], spec->attach);
			continue;
		}
		typid = TupleDescAttr(tupdesc, attnum - 1)->atttypid;
		if (!CaptureTypeOk(typid, field->cls))
		{
			if (row->problem == NULL)
				row->problem = psprintf("tracked column \"%s\" is now of type %s, which loyalty does not read; run %s again",
										spec->columns[f], format_type_be(typid), spec->attach);
			continue;
		}
		d = heap_getattr(tuple, attnum, tupdesc, &isnull);
		if (!isnull)
		{
			switch (field->cls)
			{
				case CC_KEY:
				case CC_LABEL:
					value = CaptureText(d, typid);
					break;
				case CC_AMOUNT:
					value = CaptureNumeric(d, typid);
					break;
				case CC_TIME:
					value = CaptureTimestamp(d, typid, &overflow);
					break;
				case CC_DATE:
					value = CaptureDate(d, typid);
					break;
				case CC_PROMISE:
					/* a date stays a date; checked as the end of its day will be */
					value = CaptureTimestamp(d, typid, &overflow);
					if (typid == DATEOID)
						value = d;
					break;
				case CC_DETAIL:
					value = d;	/* pushed below */
					break;
			}
			if (overflow && row->problem == NULL)
				row->problem = psprintf("tracked column \"%s\" is outside 1970-01-01 .. 2100-01-01",
										spec->columns[f]);
		}
		if (field->target != EV_FIELDS)
		{
			row->values[field->target] = value;
			row->isnull[field->target] = isnull;
			continue;
		}
		if (!have_fields)
			pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		have_fields = true;
		if (isnull)
			CapturePushField(&state, field->name, NULL);
		else if (field->cls == CC_TIME)
			CapturePushField(&state, field->name, JsonEncodeDateTime(buf, value, TIMESTAMPTZOID, NULL));
		else if (field->cls == CC_DATE)
			CapturePushField(&state, field->name, JsonEncodeDateTime(buf, value, DATEOID, NULL));
		else if (field->cls == CC_PROMISE && typid == DATEOID)
			CapturePushField(&state, field->date_name, JsonEncodeDateTime(buf, value, DATEOID, NULL));
		else if (field->cls == CC_PROMISE)
			CapturePushField(&state, field->name, JsonEncodeDateTime(buf, value, TIMESTAMPTZOID, NULL));
		else if (field->cls == CC_DETAIL)
			CapturePushDetail(&state, field->name, value, typid);
		else
			CapturePushField(&state, field->name, TextDatumGetCString(value));
	}
	if (have_fields)
	{
		JsonbValue *obj = pushJsonbValue(&state, WJB_END_OBJECT, NULL);

		row->values[EV_FIELDS] = JsonbPGetDatum(JsonbValueToJsonb(obj));
		row->isnull[EV_FIELDS] = false;
	}
}

/* Did any tracked column change between two row versions? */
static bool
CaptureChanged(HeapTuple oldtup, HeapTuple newtup, TupleDesc tupdesc, const CaptureSpec *spec)
{
	for (int f = 0; f < spec->nfields; f++)
	{
		AttrNumber	attnum;
		Form_pg_attribute att;
		bool		oldnull,
					newnull;
		Datum		oldd,
					newd;

		if (spec->columns[f] == NULL)
			continue;
		attnum = CaptureColumn(tupdesc, spec->columns[f]);
		if (attnum == InvalidAttrNumber)
			return true;		/* let the capture report the problem */
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

/* Insert one captured row into loyalty.events (0.1's layout has no fields column) */
static void
CaptureInsert(int32 source_id, char op, CapturedRow *row)
{
	Relation	rel;
	TupleDesc	desc;
	Datum		values[NUM_EV + 2];
	bool		nulls[NUM_EV + 2];
	HeapTuple	tup;
	Oid			events_relid;
	Oid			events_seqid;
	int			natts;

	row->values[EV_SOURCE_ID] = Int32GetDatum(source_id);
	row->isnull[EV_SOURCE_ID] = false;
	row->values[EV_OP] = CharGetDatum(op);
	row->isnull[EV_OP] = false;
	if (row->problem)
	{
		row->values[EV_PROBLEM] = CStringGetTextDatum(row->problem);
		row->isnull[EV_PROBLEM] = false;
	}

	/* syscache lookups: cheap, and right even after the extension is recreated */
	events_relid = LoyaltyRelid("events");
	events_seqid = LoyaltyRelid("events_event_id_seq");

	rel = table_open(events_relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	natts = desc->natts;
	if ((natts != NUM_EV + 1 && natts != NUM_EV + 2) || rel->rd_rel->relhasindex ||
		(natts == NUM_EV + 1 && !row->isnull[EV_FIELDS]))
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
		char		nullflags[NUM_EV];

		table_close(rel, RowExclusiveLock);
		for (int i = 0; i < NUM_EV; i++)
			nullflags[i] = row->isnull[i] ? 'n' : ' ';
		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
		SPI_connect();
		if (InsertEventPlan == NULL)
		{
			Oid			argtypes[NUM_EV] = {INT4OID, CHAROID, TEXTOID, TEXTOID,
			NUMERICOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, JSONBOID};
			SPIPlanPtr	plan;

			plan = SPI_prepare("INSERT INTO loyalty.events (source_id, op, order_ref, customer_id, amount, ordered_at, status, problem, fields) "
							   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", NUM_EV, argtypes);
			if (plan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			SPI_keepplan(plan);
			InsertEventPlan = plan;
		}
		ret = SPI_execute_plan(InsertEventPlan, row->values, nullflags, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "could not capture a row change: %s", SPI_result_code_string(ret));
		SPI_finish();
		SetUserIdAndSecContext(save_userid, save_sec_context);
		return;
	}

	/*
	 * event_id, source_id, op, order_ref, customer_id, amount, ordered_at,
	 * status, problem, captured_at[, fields]
	 */
	values[0] = Int64GetDatum(nextval_internal(events_seqid, false));
	nulls[0] = false;
	for (int i = 0; i < EV_FIELDS; i++)
	{
		values[i + 1] = row->values[i];
		nulls[i + 1] = row->isnull[i];
	}
	values[EV_FIELDS + 1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	nulls[EV_FIELDS + 1] = false;
	if (natts == NUM_EV + 2)
	{
		values[EV_FIELDS + 2] = row->values[EV_FIELDS];
		nulls[EV_FIELDS + 2] = row->isnull[EV_FIELDS];
	}

	tup = heap_form_tuple(desc, values, nulls);
	heap_insert(rel, tup, GetCurrentCommandId(true), 0, NULL);
	heap_freetuple(tup);
	table_close(rel, RowExclusiveLock);
}

/* Owner of a relation */
static Oid
CaptureRelOwner(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Oid			owner = rel->rd_rel->relowner;

	table_close(rel, AccessShareLock);
	return owner;
}

/* Text of the identifying field of a captured row, or NULL */
static char *
CaptureIdentity(const CapturedRow *row, const CaptureSpec *spec)
{
	int			target = spec->fields[0].target;

	return row->isnull[target] ? NULL : TextDatumGetCString(row->values[target]);
}

/* The trigger body shared by every kind of tracked table */
static void
CaptureFire(TriggerData *trigdata, int32 source_id, const CaptureSpec *spec)
{
	TupleDesc	tupdesc = RelationGetDescr(trigdata->tg_relation);
	CapturedRow newrow;
	CapturedRow oldrow;

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) &&
		!CaptureChanged(trigdata->tg_trigtuple, trigdata->tg_newtuple, tupdesc, spec))
		return;

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		CaptureRead(&newrow, trigdata->tg_trigtuple, tupdesc, spec);
		CaptureInsert(source_id, 'u', &newrow);
	}
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		if (spec->append_only)
			return;				/* an event that happened stays recorded */
		CaptureRead(&oldrow, trigdata->tg_trigtuple, tupdesc, spec);
		oldrow.problem = NULL;
		CaptureInsert(source_id, 'd', &oldrow);
	}
	else
	{
		char	   *oldid;
		char	   *newid;

		CaptureRead(&oldrow, trigdata->tg_trigtuple, tupdesc, spec);
		CaptureRead(&newrow, trigdata->tg_newtuple, tupdesc, spec);
		/* the identifying key changed: the old row is gone */
		oldid = CaptureIdentity(&oldrow, spec);
		newid = CaptureIdentity(&newrow, spec);
		if (!spec->append_only && oldid != NULL && (newid == NULL || strcmp(oldid, newid) != 0))
		{
			/* a customer whose key changed is not a deleted customer ('k': no erasure) */
			oldrow.problem = NULL;
			CaptureInsert(source_id, spec->fields == CustomerFields ? 'k' : 'd', &oldrow);
		}
		CaptureInsert(source_id, 'u', &newrow);
	}
}

/*
 * TRUNCATE of a tracked table: every row is gone. Orders: a delete event per
 * order of the source that still counts; customers: a 'k' event per profile
 * of the source (the profile goes; a truncate is not an erasure request). Reads only loyalty's tables, as their owner (the
 * shop's role need not be allowed to read them), with every name and
 * operator qualified, as a restricted operation.
 */
static void
CaptureTruncate(int32 source_id, bool orders)
{
	Oid			events_relid = LoyaltyRelid("events");
	Oid			save_userid;
	int			save_sec_context;
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1];
	int			ret;

	values[0] = Int32GetDatum(source_id);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(CaptureRelOwner(events_relid),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION |
						   SECURITY_NOFORCE_RLS);
	SPI_connect();
	ret = SPI_execute_with_args(orders ?
								"INSERT INTO loyalty.events (source_id, op, order_ref) "
								"SELECT o.source_id, 'd', o.order_ref FROM loyalty.orders o "
								"WHERE o.source_id OPERATOR(pg_catalog.=) $1 AND o.counted" :
								"INSERT INTO loyalty.events (source_id, op, customer_id) "
								"SELECT p.source_id, 'k', p.customer_id FROM loyalty.profiles p "
								"WHERE p.source_id OPERATOR(pg_catalog.=) $1",
								1, argtypes, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not capture a truncate: %s", SPI_result_code_string(ret));
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/* Check the trigger protocol shared by both entry points */
static TriggerData *
CaptureTriggerData(FunctionCallInfo fcinfo, const char *fname, int min_args)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be called as a trigger", fname),
				 errhint("Attach tables with loyalty.track_orders(), loyalty.track_customers() or loyalty.track_shipment_events().")));
	if (TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event) && TRIGGER_FIRED_AFTER(trigdata->tg_event) &&
		trigdata->tg_trigger->tgnargs >= 2)
		return trigdata;
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs < min_args)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be an AFTER ROW trigger with at least %d arguments", fname, min_args),
				 errhint("Attach tables with loyalty.track_orders(), loyalty.track_customers() or loyalty.track_shipment_events().")));
	return trigdata;
}

PG_FUNCTION_INFO_V1(capture_row);

/*
 * AFTER ROW trigger on a tracked table. Arguments: source id, kind ('o'
 * orders, 'c' customers, 's' carrier events), then the column of each field
 * of the kind in the order of OrderFields / CustomerFields / ShipmentFields
 * ('' or missing: not tracked). As an AFTER TRUNCATE statement trigger it
 * takes the source id and kind only (carrier events: nothing to do).
 */
Datum
capture_row(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = CaptureTriggerData(fcinfo, "loyalty.capture_row()", 3);
	char	  **args = trigdata->tg_trigger->tgargs;
	int			nargs = trigdata->tg_trigger->tgnargs;
	CaptureSpec spec;

	memset(&spec, 0, sizeof(spec));
	if (strcmp(args[1], "o") == 0)
	{
		spec.fields = OrderFields;
		spec.nfields = NUM_ORDER_FIELDS;
		spec.nrequired = NUM_ORDER_REQUIRED;
		spec.attach = "loyalty.track_orders()";
	}
	else if (strcmp(args[1], "c") == 0)
	{
		spec.fields = CustomerFields;
		spec.nfields = NUM_CUSTOMER_FIELDS;
		spec.nrequired = NUM_CUSTOMER_REQUIRED;
		spec.attach = "loyalty.track_customers()";
	}
	else if (strcmp(args[1], "s") == 0)
	{
		spec.fields = ShipmentFields;
		spec.nfields = NUM_SHIPMENT_FIELDS;
		spec.nrequired = NUM_SHIPMENT_REQUIRED;
		spec.attach = "loyalty.track_shipment_events()";
		spec.append_only = true;
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("unknown capture kind \"%s\"", args[1]),
				 errhint("Attach tables with loyalty.track_orders(), loyalty.track_customers() or loyalty.track_shipment_events().")));
	if (TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
	{
		if (spec.append_only)
			return PointerGetDatum(NULL);
		CaptureTruncate(pg_strtoint32(args[0]), spec.fields == OrderFields);
		return PointerGetDatum(NULL);
	}
	if (nargs - 2 > spec.nfields || nargs - 2 < spec.nrequired)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("loyalty.capture_row() has %d column arguments, expected %d to %d",
						nargs - 2, spec.nrequired, spec.nfields),
				 errhint("Run %s again.", spec.attach)));
	for (int f = 0; f < nargs - 2; f++)
		spec.columns[f] = args[f + 2][0] == '\0' ? NULL : args[f + 2];
	for (int f = 0; f < spec.nrequired; f++)
		if (spec.columns[f] == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("loyalty.capture_row() needs the %s column", spec.fields[f].name),
					 errhint("Run %s again.", spec.attach)));

	CaptureFire(trigdata, pg_strtoint32(args[0]), &spec);
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(capture_order);

/*
 * 0.1's trigger (source id, customer, amount, ordered_at, order id, status),
 * kept working until ALTER EXTENSION loyalty UPDATE re-attaches capture_row.
 */
Datum
capture_order(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = CaptureTriggerData(fcinfo, "loyalty.capture_order()", 6);
	char	  **args = trigdata->tg_trigger->tgargs;
	CaptureSpec spec;

	memset(&spec, 0, sizeof(spec));
	spec.fields = OrderFields;
	spec.nfields = NUM_ORDER_REQUIRED + 1;	/* no delivered_at */
	spec.nrequired = NUM_ORDER_REQUIRED;
	spec.attach = "loyalty.track_orders()";
	spec.columns[0] = args[4];
	spec.columns[1] = args[1];
	spec.columns[2] = args[2];
	spec.columns[3] = args[3];
	spec.columns[4] = args[5][0] == '\0' ? NULL : args[5];
	CaptureFire(trigdata, pg_strtoint32(args[0]), &spec);
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(capture_type_ok);

/* loyalty._capture_type_ok(type, class) → can a tracked column of this type be read as class? */
Datum
capture_type_ok(PG_FUNCTION_ARGS)
{
	Oid			typid = PG_GETARG_OID(0);
	char	   *cls = text_to_cstring(PG_GETARG_TEXT_PP(1));

	if (strcmp(cls, "key") == 0)
		PG_RETURN_BOOL(CaptureTypeOk(typid, CC_KEY));
	if (strcmp(cls, "amount") == 0)
		PG_RETURN_BOOL(CaptureTypeOk(typid, CC_AMOUNT));
	if (strcmp(cls, "time") == 0)
		PG_RETURN_BOOL(CaptureTypeOk(typid, CC_TIME));
	if (strcmp(cls, "label") == 0)
		PG_RETURN_BOOL(CaptureTypeOk(typid, CC_LABEL));
	if (strcmp(cls, "detail") == 0)
		PG_RETURN_BOOL(CaptureTypeOk(typid, CC_DETAIL));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown column class \"%s\"", cls),
			 errhint("The classes are key, amount, time, label and detail.")));
	PG_RETURN_BOOL(false);
}
