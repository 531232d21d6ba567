/*
 * loyalty.h — declarations shared between loyalty's C modules
 */
#ifndef LOYALTY_H
#define LOYALTY_H

/* GUCs (worker.c) */
extern char *loyalty_database;
extern int	loyalty_naptime;
extern int	loyalty_refresh_interval;
extern bool loyalty_worker_enabled;

/* GUCs (ledger.c) */
extern int	loyalty_max_points_per_entry;

/* Module initialisation, called from _PG_init */
extern void LoyaltyWorkerInit(void);
extern void LoyaltyLedgerInit(void);

#endif							/* LOYALTY_H */
