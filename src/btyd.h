/*
 * btyd.h — what the BTYD model files (btyd.c: BG/NBD and Gamma-Gamma,
 * mbgnbd.c: MBG/NBD, pareto_nbd.c: Pareto/NBD, btyd_agg.c: parallel
 * aggregation) share: the special functions, input checks, the collected
 * and compressed fitting data and the optimiser driver of btyd.c.
 */
#ifndef BTYD_H
#define BTYD_H

#include "fmgr.h"

/* One aggregated BG/NBD input row */
typedef struct BgnbdRow
{
	double		tx;
	double		T;
	int32		x;
} BgnbdRow;

/* One aggregated Gamma-Gamma input row */
typedef struct GgRow
{
	double		m;
	int32		x;
} GgRow;

/* Aggregate transition state shared by both fitting aggregates */
typedef struct BtydState
{
	int64		n;				/* rows used */
	int64		cap;			/* allocated rows */
	Size		rowsize;		/* sizeof(BgnbdRow) or sizeof(GgRow) */
	char	   *rows;
	bool		sorted;			/* rows in BgnbdRowCmp / GgRowCmp order */
	int32		nstart;			/* parameters in start[] (0: none given) */
	double		start[4];		/* where the optimiser starts (warm start) */
} BtydState;

/* A merged BG/NBD cell: w customers share (x, T, t_x) */
typedef struct BgnbdCell
{
	double		w;
	int32		x;
	int32		iT;				/* index into distinct time values */
	int32		itx;
} BgnbdCell;

/* A run of cells with the same x */
typedef struct BtydGroup
{
	int32		x;
	int64		start;
	int64		end;
} BtydGroup;

/* Compressed BG/NBD data and per-evaluation scratch space */
typedef struct BgnbdData
{
	BgnbdCell  *cells;
	int64		ncells;
	BtydGroup  *groups;
	int64		ngroups;
	double	   *tv;				/* distinct time values */
	int64		ntv;
	double	   *l1;				/* scratch: log1p(tv / alpha) */
	double	   *qv;				/* scratch: alpha / (alpha + tv) */
	double		wsum;
} BgnbdData;

/*
 * The boundary of a model whose dropout heterogeneity vanishes (BG/NBD and
 * MBG/NBD: a, b -> infinity; Pareto/NBD: s, beta -> infinity): both
 * parameters beyond BTYD_BOUNDARY_AB mark it, and a fit of the limit
 * reports the smaller of the two as BTYD_LIMIT_SCALE.
 */
#define BTYD_BOUNDARY_AB	1e6
#define BTYD_LIMIT_SCALE	1e12

/* Objective: returns mean negative log-likelihood, fills its gradient */
typedef double (*BtydObjective) (const double *theta, double *grad, void *arg);

/* Special functions (btyd.c) */
extern double BtydLogPoch(double a, double d);
extern double BtydDigammaDiff(double a, double d);
extern double BtydLog1pRatio(double v, double alpha);
extern double BtydSoftplus(double d, double *sigmoid);

/* Input checks: ereport(ERROR) with errcode and hint (btyd.c) */
extern void BtydCheckParam(const char *name, double v);
extern void BgnbdCheckCustomer(int32 x, double tx, double T);
extern void BtydCheckHorizon(double h);

/* BG/NBD E[X(t)] of a new customer, [FHL05] eq. (9) (btyd.c) */
extern double BgnbdExpectedNew(double t, double r, double alpha, double a, double b);

/* Fitting: collect rows, compress (x, T, t_x) cells, run the optimiser */
extern BtydState *BtydStateAppend(FunctionCallInfo fcinfo, BtydState *st,
								  Size rowsize, const void *row);
extern void BtydStateSetStart(FunctionCallInfo fcinfo, Datum state, int argno, int np);
extern int	BgnbdRowCmp(const void *pa, const void *pb);
extern int	GgRowCmp(const void *pa, const void *pb);
extern void BgnbdCompress(const BtydState *st, BgnbdData *d);
extern Datum BtydFinishFit(FunctionCallInfo fcinfo, int np, BtydObjective objective,
						   void *data, double wsum, MemoryContext fitcxt);
extern Datum BtydFinishFitFrom(FunctionCallInfo fcinfo, int np, BtydObjective objective,
							   void *data, double wsum, MemoryContext fitcxt,
							   const double *start);
extern Datum BtydFinishDropoutFit(FunctionCallInfo fcinfo, BtydState *st, int shift);
extern void BtydMinimizeWarm(int n, BtydObjective fn, void *arg, double *theta,
							 double *fmin, bool *converged, int *iterations);
extern void BtydMinimize(int n, BtydObjective fn, void *arg, double *theta,
						 double *fmin, bool *converged, int *iterations);
extern bool BtydWellDetermined(int n, BtydObjective fn, void *arg, const double *theta,
							   double wsum);
extern Datum BtydFitResult(FunctionCallInfo fcinfo, const double *vals, int nvals,
						   bool converged, int iterations);

/* Parallel aggregation and large fits (btyd_agg.c) */
extern void BtydStateSort(BtydState *st);
extern void BtydSortRows(BgnbdRow *rows, int64 n);
extern void BtydSortGgRows(GgRow *rows, int64 n);
extern void BtydIndexTimes(const BgnbdRow *rows, int64 n, double **tvp, int64 *ntp,
						   int32 *iT, int32 *itx);
extern bool BtydSubsample(BtydState *st, MemoryContext fitcxt, BgnbdData *d);
extern double *BtydSubsampleStart(BtydState *st, BtydObjective objective,
								  MemoryContext fitcxt, double *start);

#endif							/* BTYD_H */
