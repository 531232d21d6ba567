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

/* Module initialisation, called from _PG_init */
extern void LoyaltyWorkerInit(void);

#endif							/* LOYALTY_H */
