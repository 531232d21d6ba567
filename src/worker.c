/*
 * worker.c — background worker that keeps customer state and scores current
 *
 * Every loyalty.naptime ms it applies captured order changes and rescores the
 * customers they touched; every loyalty.refresh_interval seconds it runs a full
 * loyalty.refresh(). All the work is SQL-callable (loyalty.worker_tick), so a
 * shop without the worker gets the same results by calling loyalty.refresh().
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "loyalty.h"

char	   *loyalty_database = NULL;
int			loyalty_naptime = 1000;
int			loyalty_refresh_interval = 3600;
bool		loyalty_worker_enabled = true;

PGDLLEXPORT void LoyaltyWorkerMain(Datum main_arg);

/* Define GUCs; register the worker when loaded via shared_preload_libraries */
void
LoyaltyWorkerInit(void)
{
	BackgroundWorker worker;

	DefineCustomStringVariable("loyalty.database",
							   "Database in which the loyalty worker runs.",
							   NULL, &loyalty_database, "postgres",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomBoolVariable("loyalty.worker_enabled",
							 "Start the loyalty background worker.",
							 NULL, &loyalty_worker_enabled, true,
							 PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("loyalty.naptime",
							"Time between worker rounds (apply changes, rescore changed customers).",
							NULL, &loyalty_naptime, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("loyalty.refresh_interval",
							"Time between full refreshes (RFM bounds, all scores) by the worker.",
							NULL, &loyalty_refresh_interval, 3600, 1, 7 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress || !loyalty_worker_enabled)
		return;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "loyalty");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "LoyaltyWorkerMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "loyalty worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "loyalty worker");
	RegisterBackgroundWorker(&worker);
}

/* Is the extension installed (and not being created) in this database? */
static bool
LoyaltyInstalled(void)
{
	Oid			ext = get_extension_oid("loyalty", true);

	if (!OidIsValid(ext))
		return false;
	/* the tables exist only once CREATE EXTENSION has committed */
	return OidIsValid(get_namespace_oid("loyalty", true)) &&
		OidIsValid(get_relname_relid("customer_state", get_namespace_oid("loyalty", true)));
}

/* One round: one transaction that calls loyalty.worker_tick() */
static void
LoyaltyWorkerRound(void)
{
	int			ret;
	char		sql[128];

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());

	if (!RecoveryInProgress() && LoyaltyInstalled())
	{
		pgstat_report_activity(STATE_RUNNING, "loyalty.worker_tick");
		snprintf(sql, sizeof(sql), "SELECT loyalty.worker_tick(%d)", loyalty_refresh_interval);
		ret = SPI_execute(sql, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "loyalty worker: worker_tick failed: %s", SPI_result_code_string(ret));
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(true);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Worker entry point */
void
LoyaltyWorkerMain(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(loyalty_database, NULL, 0);
	pgstat_report_appname("loyalty worker");
	elog(LOG, "loyalty worker started in database \"%s\"", loyalty_database);

	for (;;)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 loyalty_naptime, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/*
		 * An error aborts the round and ends the process (exit code 1), and
		 * the postmaster restarts it after bgw_restart_time: a failing round
		 * is logged every time, never silently skipped.
		 */
		LoyaltyWorkerRound();
	}
}
