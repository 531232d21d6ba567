/*
 * loyalty.c — module entry point: fans out to each component's initialisation
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "loyalty.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Define settings and, when preloaded, register the launcher and its hooks */
void
_PG_init(void)
{
	LoyaltyWorkerInit();
	LoyaltyCaptureInit();
	LoyaltyLedgerInit();
	LoyaltyLauncherInit();
	MarkGUCPrefixReserved("loyalty");
}
