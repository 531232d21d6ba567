/*
 * launcher.c — one loyalty worker for every database that has the extension
 *
 * A static background worker (the launcher) connects to no database, reads
 * pg_database every loyalty.launcher_naptime and starts one dynamic worker
 * (worker.c) per database that allows connections, is not a template and is
 * listed in loyalty.database (empty: all). A worker that finds no extension
 * says so in shared memory and exits; the launcher tries that database again
 * after loyalty.launcher_naptime, or at once when a CREATE EXTENSION loyalty
 * commits anywhere. A worker that stops for any other reason (an error,
 * SIGTERM) is started again after LOYALTY_RESTART_DELAY_MS; a SIGKILL makes
 * the postmaster reinitialise, and the launcher starts everything again.
 *
 * Shared memory holds one slot per database: the pid of the worker serving
 * it (at most one: a worker claims its slot under the spinlock or exits) and
 * a hold set by a backend that needs the database without connections (DROP
 * DATABASE, RENAME, SET TABLESPACE, use as a template). The hold is taken
 * in the ProcessUtility hook, which terminates the worker and waits for it
 * before the command runs, and released when that transaction ends, so a
 * worker never blocks those commands (pg_cron's does: its issue #352).
 */
#include "postgres.h"

#include <signal.h>
#include <unistd.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "loyalty.h"

#define LOYALTY_MAX_DATABASES 256
#define LOYALTY_RESTART_DELAY_MS 5000
#define LOYALTY_HOLD_MS 60000	/* a hold outlives a crashed holder this long */
#define LOYALTY_PAUSE_WAIT_MS 10000

int			loyalty_launcher_naptime = 30;

typedef struct LoyaltyDbSlot
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		pid;			/* the worker serving it, 0 if none */
	bool		absent;			/* the last worker found no extension */
	pid_t		holder;			/* backend that needs the database alone */
	TimestampTz hold_until;
} LoyaltyDbSlot;

typedef struct LoyaltyLauncherShared
{
	slock_t		mutex;
	pid_t		launcher_pid;
	bool		recheck;		/* try databases without the extension now */
	LoyaltyDbSlot slots[LOYALTY_MAX_DATABASES];
} LoyaltyLauncherShared;

/* The launcher's own view of a database */
typedef struct LauncherEntry
{
	Oid			dboid;			/* hash key */
	BackgroundWorkerHandle *handle;
	TimestampTz last_start;
	bool		seen;
} LauncherEntry;

static LoyaltyLauncherShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility_hook = NULL;
static bool wake_at_commit = false;
static bool holding = false;

PGDLLEXPORT void LoyaltyLauncherMain(Datum main_arg);

/* Reserve the slots */
static void
LoyaltyShmemRequest(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(LoyaltyLauncherShared));
}

/* Create or attach the slots */
static void
LoyaltyShmemStartup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("loyalty launcher", sizeof(LoyaltyLauncherShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(LoyaltyLauncherShared));
		SpinLockInit(&shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* The slot of a database, made if create; caller holds the spinlock */
static LoyaltyDbSlot *
SlotFor(Oid dboid, bool create)
{
	LoyaltyDbSlot *free_slot = NULL;

	for (int i = 0; i < LOYALTY_MAX_DATABASES; i++)
	{
		LoyaltyDbSlot *s = &shared->slots[i];

		if (s->dboid == dboid)
			return s;
		if (s->dboid == InvalidOid && free_slot == NULL)
			free_slot = s;
	}
	if (!create || free_slot == NULL)
		return NULL;
	memset(free_slot, 0, sizeof(LoyaltyDbSlot));
	free_slot->dboid = dboid;
	return free_slot;
}

static bool
HoldActive(LoyaltyDbSlot *s, TimestampTz now)
{
	return s->holder != 0 && s->hold_until > now;
}

/* Wake the launcher (its SIGUSR1 handler sets its latch) */
static void
WakeLauncher(bool recheck)
{
	pid_t		pid;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	if (recheck)
		shared->recheck = true;
	pid = shared->launcher_pid;
	SpinLockRelease(&shared->mutex);
	if (pid != 0)
		kill(pid, SIGUSR1);
}

/* Clear this worker's claim and tell the launcher (before_shmem_exit callback) */
static void
WorkerRelease(int code, Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	LoyaltyDbSlot *s;

	SpinLockAcquire(&shared->mutex);
	s = SlotFor(dboid, false);
	if (s != NULL && s->pid == MyProcPid)
		s->pid = 0;
	SpinLockRelease(&shared->mutex);
	WakeLauncher(false);
}

/*
 * Claim the database for this worker: false if another worker serves it or
 * a command holds it (then the caller exits quietly).
 */
bool
LoyaltyWorkerClaim(Oid dboid)
{
	LoyaltyDbSlot *s;
	bool		ok = false;

	if (shared == NULL)
		return true;
	SpinLockAcquire(&shared->mutex);
	s = SlotFor(dboid, true);
	if (s != NULL && (s->pid == 0 || s->pid == MyProcPid) && !HoldActive(s, GetCurrentTimestamp()))
	{
		s->pid = MyProcPid;
		s->absent = false;
		ok = true;
	}
	SpinLockRelease(&shared->mutex);
	if (ok)
		before_shmem_exit(WorkerRelease, ObjectIdGetDatum(dboid));
	return ok;
}

/* The worker found no extension: the launcher waits before trying again */
void
LoyaltyWorkerReportAbsent(Oid dboid)
{
	LoyaltyDbSlot *s;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	s = SlotFor(dboid, false);
	if (s != NULL)
		s->absent = true;
	SpinLockRelease(&shared->mutex);
}

/* Is a database named in loyalty.database (empty: every database)? */
static bool
DatabaseListed(const char *name)
{
	char	   *raw;
	List	   *names;
	ListCell   *lc;
	bool		found = false;

	if (loyalty_database == NULL || loyalty_database[0] == '\0')
		return true;
	raw = pstrdup(loyalty_database);
	if (!SplitGUCList(raw, ',', &names))
		return true;			/* the check hook rejects such values */
	foreach(lc, names)
	{
		if (strcmp((char *) lfirst(lc), name) == 0)
			found = true;
	}
	return found;
}

/* GUC check hook: loyalty.database must be a list of names */
bool
LoyaltyCheckDatabaseList(char **newval, void **extra, GucSource source)
{
	char	   *raw = pstrdup(*newval ? *newval : "");
	List	   *names;
	bool		ok = SplitGUCList(raw, ',', &names);

	list_free(names);
	pfree(raw);
	if (!ok)
		GUC_check_errdetail("loyalty.database must be a comma-separated list of database names.");
	return ok;
}

/* The databases to serve: oids of pg_database rows that allow connections */
static List *
ServedDatabases(MemoryContext cxt)
{
	List	   *oids = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;

		if (db->datistemplate || !db->datallowconn || database_is_invalid_form(db) ||
			!DatabaseListed(NameStr(db->datname)))
			continue;
		old = MemoryContextSwitchTo(cxt);
		oids = lappend_oid(oids, db->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return oids;
}

/* Start the worker of one database; false if no worker slot is free */
static bool
StartWorker(LauncherEntry *e)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher restarts it */
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "loyalty");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "LoyaltyWorkerMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "loyalty worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "loyalty worker");
	worker.bgw_main_arg = ObjectIdGetDatum(e->dboid);
	worker.bgw_notify_pid = MyProcPid;

	if (e->handle)
		pfree(e->handle);
	e->handle = NULL;
	e->last_start = GetCurrentTimestamp();
	if (!RegisterDynamicBackgroundWorker(&worker, &e->handle))
	{
		e->handle = NULL;
		ereport(WARNING,
				(errmsg("loyalty launcher: no free background worker slot for database %u", e->dboid),
				 errhint("Raise max_worker_processes: loyalty needs one per database with the extension, plus its launcher.")));
		return false;
	}
	return true;
}

/*
 * One pass: start what is missing, stop what is no longer listed. Returns
 * the ms until the next pass is due.
 */
static long
LauncherScan(HTAB *entries, MemoryContext cxt)
{
	TimestampTz now;
	long		next = (long) loyalty_launcher_naptime * 1000;
	bool		recheck;
	bool		recheck_again = false;
	List	   *oids;
	ListCell   *lc;
	HASH_SEQ_STATUS seq;
	LauncherEntry *e;

	MemoryContextReset(cxt);
	SpinLockAcquire(&shared->mutex);
	recheck = shared->recheck;
	shared->recheck = false;
	SpinLockRelease(&shared->mutex);

	oids = ServedDatabases(cxt);
	now = GetCurrentTimestamp();

	hash_seq_init(&seq, entries);
	while ((e = hash_seq_search(&seq)) != NULL)
		e->seen = false;

	foreach(lc, oids)
	{
		Oid			dboid = lfirst_oid(lc);
		bool		found;
		pid_t		pid = 0;
		bool		absent = false;
		bool		held = false;
		pid_t		hpid;
		LoyaltyDbSlot *s;
		TimestampTz due;

		e = hash_search(entries, &dboid, HASH_ENTER, &found);
		if (!found)
		{
			e->handle = NULL;
			e->last_start = 0;
		}
		e->seen = true;

		SpinLockAcquire(&shared->mutex);
		s = SlotFor(dboid, true);
		if (s != NULL)
		{
			pid = s->pid;
			absent = s->absent;
			held = HoldActive(s, now);
		}
		SpinLockRelease(&shared->mutex);
		if (s == NULL)
		{
			ereport(WARNING,
					(errmsg("loyalty launcher: more than %d databases, database %u is not served", LOYALTY_MAX_DATABASES, dboid),
					 errhint("List the shop databases in loyalty.database.")));
			continue;
		}
		if (pid != 0 || held)
			continue;
		/* registered, not yet claimed: a recheck must wait for its verdict */
		if (e->handle != NULL && GetBackgroundWorkerPid(e->handle, &hpid) != BGWH_STOPPED)
		{
			if (recheck)
				recheck_again = true;
			continue;
		}

		if (absent && !recheck)
			due = TimestampTzPlusMilliseconds(e->last_start, loyalty_launcher_naptime * 1000L);
		else if (absent)
			due = now;
		else
			due = TimestampTzPlusMilliseconds(e->last_start, LOYALTY_RESTART_DELAY_MS);
		if (due > now)
		{
			long		ms = TimestampDifferenceMilliseconds(now, due);

			next = Min(next, Max(ms, 10));
			continue;
		}
		if (e->last_start != 0 && !absent)
			ereport(LOG, (errmsg("loyalty launcher: restarting the worker of database %u", dboid)));
		(void) StartWorker(e);
	}

	if (recheck_again)
	{
		SpinLockAcquire(&shared->mutex);
		shared->recheck = true;
		SpinLockRelease(&shared->mutex);
		next = Min(next, 100);
	}

	/* dropped or no longer listed: stop the worker, forget the database */
	hash_seq_init(&seq, entries);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		LoyaltyDbSlot *s;
		pid_t		pid = 0;

		if (e->seen)
			continue;
		SpinLockAcquire(&shared->mutex);
		s = SlotFor(e->dboid, false);
		if (s != NULL)
		{
			pid = s->pid;
			if (pid == 0 && s->holder == 0)
				s->dboid = InvalidOid;
		}
		SpinLockRelease(&shared->mutex);
		if (pid != 0)
		{
			kill(pid, SIGTERM);
			continue;			/* its exit wakes us; forget it then */
		}
		if (e->handle)
			pfree(e->handle);
		hash_search(entries, &e->dboid, HASH_REMOVE, NULL);
	}
	return next;
}

/* Launcher entry point */
void
LoyaltyLauncherMain(Datum main_arg)
{
	HASHCTL		ctl;
	HTAB	   *entries;
	MemoryContext cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("loyalty launcher");

	SpinLockAcquire(&shared->mutex);
	shared->launcher_pid = MyProcPid;
	shared->recheck = true;
	SpinLockRelease(&shared->mutex);
	elog(LOG, "loyalty launcher started");

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(LauncherEntry);
	entries = hash_create("loyalty launcher databases", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	cxt = AllocSetContextCreate(TopMemoryContext, "loyalty launcher scan", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		timeout = LauncherScan(entries, cxt);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Take the hold on a database a command needs without connections, stop its
 * worker and wait until it has gone. Only for the database's owner (or a
 * superuser): others' commands fail their own permission check anyway.
 */
static void
PauseDatabase(const char *name)
{
	Oid			dboid = get_database_oid(name, true);
	LoyaltyDbSlot *s;
	pid_t		pid = 0;
	TimestampTz deadline;

	if (!OidIsValid(dboid) || !pg_database_ownercheck(dboid, GetUserId()))
		return;
	SpinLockAcquire(&shared->mutex);
	s = SlotFor(dboid, true);
	if (s != NULL)
	{
		s->holder = MyProcPid;
		s->hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), LOYALTY_HOLD_MS);
		pid = s->pid;
	}
	SpinLockRelease(&shared->mutex);
	if (s == NULL)
		return;
	holding = true;
	if (pid == 0)
		return;

	kill(pid, SIGTERM);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), LOYALTY_PAUSE_WAIT_MS);
	for (;;)
	{
		bool		gone;

		SpinLockAcquire(&shared->mutex);
		gone = (s->dboid != dboid || s->pid != pid);
		SpinLockRelease(&shared->mutex);
		if (gone || GetCurrentTimestamp() > deadline)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Release the holds this backend took; the launcher looks again */
static void
ResumeDatabases(void)
{
	holding = false;
	SpinLockAcquire(&shared->mutex);
	for (int i = 0; i < LOYALTY_MAX_DATABASES; i++)
	{
		if (shared->slots[i].holder == MyProcPid)
		{
			shared->slots[i].holder = 0;
			shared->slots[i].hold_until = 0;
		}
	}
	SpinLockRelease(&shared->mutex);
	WakeLauncher(false);
}

/* At the end of a transaction: release holds, announce a new extension */
static void
LauncherXactCallback(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT)
		return;
	if (holding)
		ResumeDatabases();
	if (wake_at_commit && event == XACT_EVENT_COMMIT)
		WakeLauncher(true);
	wake_at_commit = false;
}

/* The database a utility statement needs without connections, or NULL */
static const char *
DatabaseNeededAlone(Node *stmt)
{
	ListCell   *lc;

	switch (nodeTag(stmt))
	{
		case T_DropdbStmt:
			return ((DropdbStmt *) stmt)->dbname;
		case T_RenameStmt:
			if (((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
				return ((RenameStmt *) stmt)->subname;
			return NULL;
		case T_AlterDatabaseStmt:
			foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
			{
				if (strcmp(((DefElem *) lfirst(lc))->defname, "tablespace") == 0)
					return ((AlterDatabaseStmt *) stmt)->dbname;
			}
			return NULL;
		case T_CreatedbStmt:
			foreach(lc, ((CreatedbStmt *) stmt)->options)
			{
				DefElem    *d = (DefElem *) lfirst(lc);

				if (strcmp(d->defname, "template") == 0 && d->arg != NULL)
					return defGetString(d);
			}
			return NULL;
		default:
			return NULL;
	}
}

/* ProcessUtility hook: keep the workers out of the way of database commands */
static void
LoyaltyProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	const char *dbname = DatabaseNeededAlone(stmt);

	if (dbname != NULL)
		PauseDatabase(dbname);
	if (IsA(stmt, CreateExtensionStmt) &&
		strcmp(((CreateExtensionStmt *) stmt)->extname, "loyalty") == 0)
		wake_at_commit = true;
	/* a new database may have the extension from its template */
	if (IsA(stmt, CreatedbStmt))
		wake_at_commit = true;

	if (prev_process_utility_hook)
		prev_process_utility_hook(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
}

/* Register the launcher, its shared memory and hooks (preloaded only) */
void
LoyaltyLauncherInit(void)
{
	BackgroundWorker worker;

	DefineCustomIntVariable("loyalty.launcher_naptime",
							"Time between the launcher's looks for databases to serve.",
							"A CREATE EXTENSION loyalty or CREATE DATABASE wakes it at once.",
							&loyalty_launcher_naptime, 30, 1, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress || !loyalty_worker_enabled)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = LoyaltyShmemRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = LoyaltyShmemStartup;
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = LoyaltyProcessUtility;
	RegisterXactCallback(LauncherXactCallback, NULL);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "loyalty");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "LoyaltyLauncherMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "loyalty launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "loyalty launcher");
	RegisterBackgroundWorker(&worker);
}
