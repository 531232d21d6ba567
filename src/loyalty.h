/*
 * loyalty.h — declarations shared between loyalty's C modules
 */
#ifndef LOYALTY_H
#define LOYALTY_H

#include "utils/guc.h"
#include "utils/numeric.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

/* GUCs (worker.c) */
extern char *loyalty_database;
extern int	loyalty_naptime;
extern int	loyalty_refresh_interval;
extern bool loyalty_worker_enabled;
extern int	loyalty_launcher_naptime;
extern int	loyalty_health_interval;

/* GUCs (capture.c) */
extern int	loyalty_future_tolerance;

/* GUCs (ledger.c) */
extern int	loyalty_max_points_per_entry;

/* Bounds of what loyalty accepts (capture.c, docs/capture.md); the ledger's
 * customer keys have the same limit (62_rewards.sql _check_customer) */
#define LOYALTY_MAX_KEY_CHARS 200
#define LOYALTY_MAX_AMOUNT "1000000000000"
/* keys under this prefix are loyalty's own (order points, expiry, staff messages) */
#define LOYALTY_RESERVED_KEY_PREFIX "loyalty:"

extern const char *LoyaltyKeyProblem(const char *s, int len);
extern const char *LoyaltyKeyProblemMax(const char *s, int len, int max_chars);
extern bool LoyaltyKeyReserved(const char *s, int len);
extern const char *LoyaltyAmountProblem(Numeric n);
extern const char *LoyaltyTimeProblem(TimestampTz t, TimestampTz reference, bool check_future);

/* Days: whole UTC calendar days (days.c; SQL loyalty._utc_days) */
extern int64 LoyaltyUtcDay(TimestampTz ts);
extern int64 LoyaltyUtcDays(TimestampTz from, TimestampTz to);

/* loyalty's own tables and columns by name (relations.c) */
extern Oid	LoyaltyRelid(const char *name);
extern AttrNumber LoyaltyAttnum(Relation rel, const char *name);

/* Module initialisation, called from _PG_init */
extern void LoyaltyWorkerInit(void);
extern void LoyaltyCaptureInit(void);
extern void LoyaltyLedgerInit(void);
extern void LoyaltyLauncherInit(void);

/* Launcher and workers (launcher.c) */
extern bool LoyaltyWorkerClaim(Oid dboid);
extern void LoyaltyWorkerReportAbsent(Oid dboid);
extern bool LoyaltyCheckDatabaseList(char **newval, void **extra, GucSource source);

#endif							/* LOYALTY_H */
