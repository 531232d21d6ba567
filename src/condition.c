/*
 * condition.c — custom campaign conditions: checked, then run with least rights
 *
 * A custom campaign's condition is text a loyalty_admin wrote. It is run by
 * enqueue_due (pg_cron, often as a superuser) and by loyalty.due_messages
 * (SECURITY DEFINER), so two layers keep it from running anything but a
 * filter over the customer context:
 *
 * 1. It is parsed with the server's own grammar (raw_parser, as
 *    "SELECT <condition>": exactly one expression, nothing else) and the raw
 *    tree is walked against an allowlist: unqualified references to columns
 *    of loyalty._journey_context, constants, built-in operators, AND/OR/NOT,
 *    IS [NOT] NULL/TRUE/..., CASE, COALESCE, NULLIF, GREATEST, LEAST, casts
 *    to built-in scalar types, and a short list of pure built-in functions.
 *    Qualified names (other than pg_catalog.), subqueries, parameters, other
 *    functions, collations, row constructors, ... are refused with 22023.
 *    The check runs when a campaign is saved (loyalty._campaign_params) and
 *    again before each run, so a row that bypassed the trigger (a restore, a
 *    0.1 campaign) is checked too.
 *
 * 2. It is run as the NOLOGIN role loyalty_condition, which may only read the
 *    context's tables, under SECURITY_RESTRICTED_OPERATION (no SET ROLE, no
 *    temp objects) and with search_path pinned to pg_catalog, pg_temp
 *    (pg_temp is never searched for functions or operators, and comes after
 *    pg_catalog for types), never as the caller or the extension's owner.
 *
 * loyalty._condition_customers runs one campaign's condition in a
 * subtransaction of its own: a condition that raises at run time (a division
 * by zero on some customer's data) yields no customers and is remembered
 * until loyalty._condition_errors() is read (enqueue_due writes them into
 * loyalty.campaign_errors), so the other campaigns still run.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "catalog/namespace.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "parser/parse_func.h"
#include "parser/parse_type.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#define CONDITION_ROLE "loyalty_condition"
#define CONDITION_MAX_LEN 4000

/* Pure built-in functions a condition may call (pg_catalog, by name) */
static const char *const allowed_functions[] = {
	"abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "mod", "power", "sqrt", "exp", "ln", "log",
	"lower", "upper", "length", "char_length", "btrim", "ltrim", "rtrim", "substr", "substring", "left", "right",
	"strpos", "position", "starts_with", "replace", "date_part", "extract", "date_trunc", "timezone",
	"similar_to_escape", NULL
};

/* Built-in operators a condition may use (pg_catalog, by name) */
static const char *const allowed_operators[] = {
	"=", "<>", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "||",
	"~", "~*", "!~", "!~*", "~~", "!~~", "~~*", "!~~*", NULL
};

/* Built-in types a condition may cast to (pg_catalog, by name) */
static const char *const allowed_types[] = {
	"bool", "int2", "int4", "int8", "numeric", "float4", "float8", "text", "varchar", "bpchar",
	"date", "timestamptz", "timestamp", "interval", "time", NULL
};

#define CONDITION_HINT \
	"Write a boolean expression over the columns of loyalty.journey_context (%s) with constants, " \
	"built-in operators, AND/OR/NOT, IS [NOT] NULL, CASE, COALESCE, NULLIF, GREATEST, LEAST, casts to " \
	"built-in types and a few pure built-in functions (docs/security.md lists them)."

typedef struct ConditionCheck
{
	const char *condition;
	List	   *columns;		/* names of the context's columns (char *) */
} ConditionCheck;

/* A failed run of one campaign's condition, kept until _condition_errors() */
typedef struct ConditionError
{
	int32		campaign_id;
	char		sqlstate[6];
	char	   *message;
} ConditionError;

static List *condition_errors = NIL;	/* in TopTransactionContext */
static bool xact_callback_registered = false;

static bool
in_list(const char *const *list, const char *name)
{
	for (int i = 0; list[i] != NULL; i++)
		if (strcmp(list[i], name) == 0)
			return true;
	return false;
}

static char *
joined(const char *const *list)
{
	StringInfoData s;

	initStringInfo(&s);
	for (int i = 0; list[i] != NULL; i++)
		appendStringInfo(&s, "%s%s", i > 0 ? ", " : "", list[i]);
	return s.data;
}

/* Names of the output columns of loyalty._journey_context(timestamptz) */
static List *
ConditionContextColumns(void)
{
	Oid			argtype = TIMESTAMPTZOID;
	Oid			fn;
	TupleDesc	tupdesc;
	List	   *cols = NIL;

	fn = LookupFuncName(list_make2(makeString("loyalty"), makeString("_journey_context")), 1, &argtype, false);
	if (get_func_result_type(fn, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "loyalty._journey_context does not return a row type");
	for (int i = 0; i < tupdesc->natts; i++)
		if (!TupleDescAttr(tupdesc, i)->attisdropped)
			cols = lappend(cols, pstrdup(NameStr(TupleDescAttr(tupdesc, i)->attname)));
	return cols;
}

static char *
ColumnList(List *cols)
{
	StringInfoData s;
	ListCell   *lc;

	initStringInfo(&s);
	foreach(lc, cols)
		appendStringInfo(&s, "%s%s", foreach_current_index(lc) > 0 ? ", " : "", (char *) lfirst(lc));
	return s.data;
}

static void pg_attribute_noreturn()
ConditionRefuse(ConditionCheck *cc, int location, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("condition %s is not allowed: %s", quote_literal_cstr(cc->condition), what),
			 location >= 0 ? errdetail("At character %d of the condition.", location + 1) : 0,
			 errhint(CONDITION_HINT, ColumnList(cc->columns))));
}

/*
 * A name list (operator, function or type) is allowed when it is unqualified
 * or qualified with pg_catalog and its last part is in the list.
 */
static bool
CatalogName(List *names, const char *const *allowed, const char **last)
{
	*last = strVal(llast(names));
	if (list_length(names) == 2)
	{
		if (strcmp(strVal(linitial(names)), "pg_catalog") != 0)
			return false;
	}
	else if (list_length(names) != 1)
		return false;
	return in_list(allowed, *last);
}

static void ConditionWalk(Node *node, ConditionCheck *cc);

static void
ConditionWalkList(List *list, ConditionCheck *cc)
{
	ListCell   *lc;

	foreach(lc, list)
		ConditionWalk((Node *) lfirst(lc), cc);
}

static void
ConditionWalkType(TypeName *tn, ConditionCheck *cc)
{
	const char *last;

	if (tn->setof || tn->pct_type || tn->typeOid != InvalidOid || !CatalogName(tn->names, allowed_types, &last))
		ConditionRefuse(cc, tn->location,
						psprintf("cast to %s (casts to %s only)", TypeNameToString(tn), joined(allowed_types)));
	ConditionWalkList(tn->typmods, cc);
}

/* Refuse anything in a raw parse tree that is not on the allowlist */
static void
ConditionWalk(Node *node, ConditionCheck *cc)
{
	const char *last;

	check_stack_depth();
	if (node == NULL)
		return;
	switch (nodeTag(node))
	{
		case T_List:
			ConditionWalkList((List *) node, cc);
			break;
		case T_A_Const:
			break;
		case T_ColumnRef:
			{
				ColumnRef  *cr = (ColumnRef *) node;
				Node	   *field = linitial(cr->fields);
				ListCell   *lc;

				if (list_length(cr->fields) != 1 || !IsA(field, String))
					ConditionRefuse(cc, cr->location, "only unqualified column names of the context");
				foreach(lc, cc->columns)
					if (strcmp(lfirst(lc), strVal(field)) == 0)
						return;
				ConditionRefuse(cc, cr->location, psprintf("no column %s in the context", quote_identifier(strVal(field))));
			}
		case T_A_Expr:
			{
				A_Expr	   *e = (A_Expr *) node;

				switch (e->kind)
				{
					case AEXPR_OP:
					case AEXPR_OP_ANY:
					case AEXPR_OP_ALL:
					case AEXPR_DISTINCT:
					case AEXPR_NOT_DISTINCT:
					case AEXPR_NULLIF:
					case AEXPR_IN:
					case AEXPR_LIKE:
					case AEXPR_ILIKE:
					case AEXPR_SIMILAR:
						if (!CatalogName(e->name, allowed_operators, &last))
							ConditionRefuse(cc, e->location,
											psprintf("operator %s (built-in operators %s only)",
													 NameListToString(e->name), joined(allowed_operators)));
						break;
					case AEXPR_BETWEEN:
					case AEXPR_NOT_BETWEEN:
					case AEXPR_BETWEEN_SYM:
					case AEXPR_NOT_BETWEEN_SYM:
						break;
					default:
						ConditionRefuse(cc, e->location, "this kind of expression");
				}
				ConditionWalk(e->lexpr, cc);
				ConditionWalk(e->rexpr, cc);
				break;
			}
		case T_BoolExpr:
			ConditionWalkList(((BoolExpr *) node)->args, cc);
			break;
		case T_NullTest:
			ConditionWalk((Node *) ((NullTest *) node)->arg, cc);
			break;
		case T_BooleanTest:
			ConditionWalk((Node *) ((BooleanTest *) node)->arg, cc);
			break;
		case T_CaseExpr:
			{
				CaseExpr   *c = (CaseExpr *) node;

				ConditionWalk((Node *) c->arg, cc);
				ConditionWalkList(c->args, cc);
				ConditionWalk((Node *) c->defresult, cc);
				break;
			}
		case T_CaseWhen:
			ConditionWalk((Node *) ((CaseWhen *) node)->expr, cc);
			ConditionWalk((Node *) ((CaseWhen *) node)->result, cc);
			break;
		case T_CoalesceExpr:
			ConditionWalkList(((CoalesceExpr *) node)->args, cc);
			break;
		case T_MinMaxExpr:
			ConditionWalkList(((MinMaxExpr *) node)->args, cc);
			break;
		case T_A_ArrayExpr:
			ConditionWalkList(((A_ArrayExpr *) node)->elements, cc);
			break;
		case T_TypeCast:
			ConditionWalkType(((TypeCast *) node)->typeName, cc);
			ConditionWalk(((TypeCast *) node)->arg, cc);
			break;
		case T_FuncCall:
			{
				FuncCall   *f = (FuncCall *) node;

				if (!CatalogName(f->funcname, allowed_functions, &last))
					ConditionRefuse(cc, f->location,
									psprintf("function %s (%s only)", NameListToString(f->funcname),
											 joined(allowed_functions)));
				if (f->agg_order || f->agg_filter || f->over || f->agg_within_group || f->agg_star ||
					f->agg_distinct || f->func_variadic)
					ConditionRefuse(cc, f->location, "aggregate, window or variadic call");
				ConditionWalkList(f->args, cc);
				break;
			}
		case T_SubLink:
			ConditionRefuse(cc, ((SubLink *) node)->location, "subquery");
		case T_ParamRef:
			ConditionRefuse(cc, ((ParamRef *) node)->location, "parameter");
		default:
			ConditionRefuse(cc, exprLocation(node), "this kind of expression");
	}
}

/*
 * Parse a condition as "SELECT <condition>" and check it against the
 * allowlist; raises 22023 (or the parser's 42601) when it is not allowed.
 */
static void
ConditionValidate(const char *condition)
{
	ConditionCheck cc;
	List	   *stmts;
	RawStmt    *raw;
	SelectStmt *sel;
	ResTarget  *rt;

	cc.condition = condition;
	cc.columns = ConditionContextColumns();
	if (strlen(condition) > CONDITION_MAX_LEN)
		ConditionRefuse(&cc, -1, psprintf("longer than %d characters", CONDITION_MAX_LEN));

	stmts = raw_parser(psprintf("SELECT\n%s\n", condition), RAW_PARSE_DEFAULT);
	if (list_length(stmts) != 1)
		ConditionRefuse(&cc, -1, "one expression, without ;");
	raw = linitial_node(RawStmt, stmts);
	if (raw->stmt_len != 0 || !IsA(raw->stmt, SelectStmt))
		ConditionRefuse(&cc, -1, "one expression, without ;");
	sel = (SelectStmt *) raw->stmt;
	if (sel->op != SETOP_NONE || sel->distinctClause || sel->intoClause || sel->fromClause ||
		sel->whereClause || sel->groupClause || sel->groupDistinct || sel->havingClause || sel->windowClause ||
		sel->valuesLists || sel->sortClause || sel->limitOffset || sel->limitCount || sel->lockingClause ||
		sel->withClause || list_length(sel->targetList) != 1)
		ConditionRefuse(&cc, -1, "one expression, without FROM, WHERE, UNION, ORDER BY or other clauses");
	rt = linitial_node(ResTarget, sel->targetList);
	if (rt->name != NULL || rt->indirection != NIL)
		ConditionRefuse(&cc, rt->location, "a label after the expression");
	ConditionWalk(rt->val, &cc);
}

/*
 * Run a checked condition as loyalty_condition (restricted, search_path
 * pinned) against the context as of as_of; the matching customer ids, copied
 * into resultcxt. check_only: plan and start it (types are checked), read
 * nothing.
 */
static List *
ConditionRun(const char *condition, Datum as_of, bool check_only, MemoryContext resultcxt)
{
	Oid			role = get_role_oid(CONDITION_ROLE, true);
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	Oid			argtypes[1] = {TIMESTAMPTZOID};
	Datum		values[1];
	List	   *ids = NIL;
	char	   *sql;
	int			ret;

	if (!OidIsValid(role))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role %s does not exist", CONDITION_ROLE),
				 errhint("Custom conditions run as this NOLOGIN role; ALTER EXTENSION loyalty UPDATE or reinstall creates it.")));
	ConditionValidate(condition);
	/* newlines: a trailing -- comment ends before the closing parenthesis */
	sql = psprintf("SELECT c.customer_id FROM loyalty._journey_context($1) c WHERE (\n%s\n)%s",
				   condition, check_only ? " LIMIT 0" : "");
	values[0] = as_of;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(role, save_sec_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	ret = SPI_execute_with_args(sql, 1, argtypes, values, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "condition query failed: %s", SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(resultcxt);

			ids = lappend(ids, TextDatumGetCString(d));
			MemoryContextSwitchTo(old);
		}
	}

	/* an error above is undone by the (sub)transaction's abort instead */
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	SPI_finish();
	return ids;
}

static void
ConditionXactCallback(XactEvent event, void *arg)
{
	/* the list lived in TopTransactionContext */
	condition_errors = NIL;
}

/* Remember a campaign's failure (one per campaign, the last) */
static void
ConditionRemember(int32 campaign_id, ErrorData *edata)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	ConditionError *ce = NULL;
	ListCell   *lc;

	if (!xact_callback_registered)
	{
		RegisterXactCallback(ConditionXactCallback, NULL);
		xact_callback_registered = true;
	}
	foreach(lc, condition_errors)
		if (((ConditionError *) lfirst(lc))->campaign_id == campaign_id)
			ce = lfirst(lc);
	if (ce == NULL)
	{
		ce = palloc0(sizeof(ConditionError));
		ce->campaign_id = campaign_id;
		condition_errors = lappend(condition_errors, ce);
	}
	strlcpy(ce->sqlstate, unpack_sql_state(edata->sqlerrcode), sizeof(ce->sqlstate));
	ce->message = pstrdup(edata->message ? edata->message : "unknown error");
	MemoryContextSwitchTo(old);
}

PG_FUNCTION_INFO_V1(_check_condition);
/* Check a condition when a campaign is saved: allowlist, then planned as loyalty_condition */
Datum
_check_condition(PG_FUNCTION_ARGS)
{
	char	   *condition = text_to_cstring(PG_GETARG_TEXT_PP(0));

	(void) ConditionRun(condition, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()), true,
						CurrentMemoryContext);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(_condition_customers);
/*
 * The customers a campaign's condition holds for as of as_of, evaluated in a
 * subtransaction: on an error, none, and the error is remembered (WARNING).
 */
Datum
_condition_customers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int32		campaign_id = PG_GETARG_INT32(0);
	char	   *condition = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Datum		as_of = PG_GETARG_DATUM(2);
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	List	   *ids = NIL;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		ids = ConditionRun(condition, as_of, false, oldcontext);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		/* a cancel (statement_timeout, pg_cancel_backend) still stops the run */
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		ConditionRemember(campaign_id, edata);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("condition of campaign %d failed: %s", campaign_id, edata->message),
				 errhint("The campaign sends nothing until its condition is fixed; see loyalty.campaign_errors.")));
		ids = NIL;
	}
	PG_END_TRY();

	foreach(lc, ids)
	{
		Datum		v = CStringGetTextDatum((char *) lfirst(lc));
		bool		n = false;

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &v, &n);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(_condition_errors);
/* The conditions that failed in this transaction (one row per campaign), then forgets them */
Datum
_condition_errors(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	foreach(lc, condition_errors)
	{
		ConditionError *ce = lfirst(lc);
		Datum		v[3];
		bool		n[3] = {false, false, false};

		v[0] = Int32GetDatum(ce->campaign_id);
		v[1] = CStringGetTextDatum(ce->sqlstate);
		v[2] = CStringGetTextDatum(ce->message);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
	condition_errors = NIL;
	return (Datum) 0;
}
