-- Issue 12: MBG/NBD on its boundary a, b -> infinity (dropout without
-- heterogeneity) is fitted as that limit by mbgnbd_fit (src/btyd.c) and
-- recorded by fit_models as fitted, params.limit = true and p, with a note,
-- as BG/NBD's boundary is (50_models.sql).

-- validate_models with Pareto/NBD enabled and BG/NBD not: f.a was resolved
-- for every model and raised "record f has no field a" (fit_models failed).
