/*
 * loyalty.h — declarations shared between loyalty's C modules
 */
#ifndef LOYALTY_H
#define LOYALTY_H

#include "utils/numeric.h"
#include "utils/timestamp.h"

/* GUCs (worker.c) */
extern char *loyalty_database;
extern int	loyalty_naptime;
extern int	loyalty_refresh_interval;
extern bool loyalty_worker_enabled;

/* GUCs (capture.c) */
extern int	loyalty_future_tolerance;

/* Bounds of what loyalty accepts (capture.c, docs/capture.md) */
#define LOYALTY_MAX_KEY_CHARS 255
#define LOYALTY_MAX_AMOUNT "1000000000000"

extern const char *LoyaltyKeyProblem(const char *s, int len);
extern const char *LoyaltyAmountProblem(Numeric n);
extern const char *LoyaltyTimeProblem(TimestampTz t, TimestampTz reference, bool check_future);

/* Module initialisation, called from _PG_init */
extern void LoyaltyWorkerInit(void);
extern void LoyaltyCaptureInit(void);

#endif							/* LOYALTY_H */
