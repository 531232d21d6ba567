/*
 * loyalty.h — declarations shared between loyalty's C modules
 */
#ifndef LOYALTY_H
#define LOYALTY_H

#include "utils/guc.h"

/* GUCs (worker.c) */
extern char *loyalty_database;
extern int	loyalty_naptime;
extern int	loyalty_refresh_interval;
extern bool loyalty_worker_enabled;
extern int	loyalty_launcher_naptime;
extern int	loyalty_health_interval;

/* GUCs (ledger.c) */
extern int	loyalty_max_points_per_entry;

/* Module initialisation, called from _PG_init */
extern void LoyaltyWorkerInit(void);
extern void LoyaltyLedgerInit(void);
extern void LoyaltyLauncherInit(void);

/* Launcher and workers (launcher.c) */
extern bool LoyaltyWorkerClaim(Oid dboid);
extern void LoyaltyWorkerReportAbsent(Oid dboid);
extern bool LoyaltyCheckDatabaseList(char **newval, void **extra, GucSource source);

#endif							/* LOYALTY_H */
