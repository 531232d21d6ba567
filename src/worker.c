/*
 * worker.c — background worker that keeps customer state and scores current
 *
 * Every loyalty.naptime ms it applies captured order changes and rescores the
 * customers they touched; every loyalty.refresh_interval seconds it runs a full
 * loyalty.refresh(); every loyalty.health_interval seconds it runs
 * loyalty.check_health(). All the work is SQL-callable (loyalty.worker_tick), so a
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
#include "utils/timestamp.h"

#include "loyalty.h"

char	   *loyalty_database = NULL;
int			loyalty_naptime = 1000;
int			loyalty_refresh_interval = 3600;
bool		loyalty_worker_enabled = true;
int			loyalty_health_interval = 300;

PGDLLEXPORT void LoyaltyWorkerMain(Datum main_arg);

/* Define the worker's GUCs (the launcher, launcher.c, starts the workers) */
void
LoyaltyWorkerInit(void)
{
	DefineCustomStringVariable("loyalty.database",
							   "Databases the loyalty workers serve (comma-separated; empty: every database with the extension).",
							   NULL, &loyalty_database, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_LIST_INPUT,
							   LoyaltyCheckDatabaseList, NULL, NULL);
	DefineCustomBoolVariable("loyalty.worker_enabled",
							 "Start the loyalty launcher and workers.",
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
	DefineCustomIntVariable("loyalty.health_interval",
							"Time between the worker's runs of loyalty.check_health() (0: never).",
							NULL, &loyalty_health_interval, 300, 0, 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
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

/*
 * One round: one transaction that calls loyalty.worker_tick(). Returns false
 * when the extension is not (or no longer) installed here.
 */
static bool
LoyaltyWorkerRound(void)
{
	int			ret;
	char		sql[128];
	bool		installed;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());

	installed = LoyaltyInstalled();
	if (installed && !RecoveryInProgress())
	{
		pgstat_report_activity(STATE_RUNNING, "loyalty.worker_tick");
		snprintf(sql, sizeof(sql), "SELECT loyalty.worker_tick(%d)", loyalty_refresh_interval);
		ret = SPI_execute(sql, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "could not run loyalty.worker_tick(): %s", SPI_result_code_string(ret));
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(true);
	pgstat_report_activity(STATE_IDLE, NULL);
	return installed;
}

/*
 * Evaluate the health checks (when the installed version has them). An error
 * is logged and the worker carries on: the watchdog must not stop the work
 * it watches.
 */
static void
LoyaltyWorkerHealth(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_execute("SELECT 1 WHERE pg_catalog.to_regprocedure('loyalty.check_health()') IS NOT NULL",
						true, 0) == SPI_OK_SELECT && SPI_processed == 1)
		{
			pgstat_report_activity(STATE_RUNNING, "loyalty.check_health");
			if (SPI_execute("SELECT pg_catalog.count(*) FROM loyalty.check_health()", false, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not run loyalty.check_health()");
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Worker entry point; main_arg is the database's oid. The worker exits
 * quietly (code 0) when another worker serves the database, a command needs
 * the database alone, or the extension is absent; the launcher decides when
 * to try again.
 */
void
LoyaltyWorkerMain(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	bool		announced = false;
	TimestampTz next_health = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	/*
	 * The worker runs as the bootstrap superuser: a search_path set on the
	 * database (by its owner) must not decide what its queries call.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("loyalty worker");
	if (!LoyaltyWorkerClaim(dboid))
		proc_exit(0);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/*
		 * An error aborts the round and ends the process (exit code 1), and
		 * the launcher starts it again after a delay: a failing round is
		 * logged every time, never silently skipped.
		 */
		if (!LoyaltyWorkerRound())
		{
			LoyaltyWorkerReportAbsent(dboid);
			if (announced)
				elog(LOG, "loyalty worker for database %u will stop because the extension was dropped", dboid);
			proc_exit(0);
		}
		if (!announced)
		{
			elog(LOG, "loyalty worker started in database %u", dboid);
			announced = true;
		}
		if (loyalty_health_interval > 0 && GetCurrentTimestamp() >= next_health)
		{
			LoyaltyWorkerHealth();
			next_health = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), loyalty_health_interval * 1000L);
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 loyalty_naptime, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
