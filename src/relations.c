/*
 * relations.c — loyalty's own tables and columns, looked up by name
 *
 * C code that reads or writes loyalty's tables directly (ledger.c, intake.c)
 * finds them here: by name in the syscache (right after the extension is
 * dropped and created again), with the error a user sees when a table or
 * column was dropped, renamed or altered by hand.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "parser/parse_relation.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "loyalty.h"

/* The OID of relation loyalty.<name> (a table or sequence); raises when it is gone */
Oid
LoyaltyRelid(const char *name)
{
	Oid			relid = get_relname_relid(name, get_namespace_oid("loyalty", false));

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"loyalty.%s\" does not exist", name),
				 errhint("A table of the extension was dropped or renamed by hand: restore it from a backup (pg_dump keeps loyalty's tables).")));
	return relid;
}

/* The attribute number of column <name> of one of loyalty's tables; raises when it is gone */
AttrNumber
LoyaltyAttnum(Relation rel, const char *name)
{
	int			attnum = attnameAttNum(rel, name, false);

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"loyalty.%s\" does not exist", name, RelationGetRelationName(rel)),
				 errhint("A table of the extension was altered by hand: rename or restore the column.")));
	return (AttrNumber) attnum;
}
