-- BG/NBD and Gamma-Gamma on the CDNOW sample (Fader, Hardie & Lee 2005):
-- 2,357 customers, calibration 1997-01-01 .. 1997-09-30, time in weeks.
-- Published fits: BG/NBD r = 0.2426, alpha = 4.4136, a = 0.7929, b = 2.4259,
-- log-likelihood -9582.43; Gamma-Gamma (946 repeat buyers) p = 6.2496,
-- q = 3.7442, gamma = 15.4435, log-likelihood -4055.92.
CREATE TEMP TABLE cdnow_raw (line text);
\copy cdnow_raw FROM '../shared/data/cdnow/CDNOW_sample.txt'
-- columns: master_id sample_id date(YYYYMMDD) cds dollars; CRLF line ends
CREATE TEMP TABLE cdnow_tx AS
SELECT f[2]::int AS id, to_date(f[3], 'YYYYMMDD') AS day, f[5]::numeric AS dollars
FROM (SELECT regexp_split_to_array(btrim(line, E' \r'), '\s+') AS f FROM cdnow_raw) s;
SELECT count(*) AS lines, count(DISTINCT id) AS customers FROM cdnow_tx;

-- one transaction per customer and day (same-day purchases merged)
CREATE TEMP TABLE cdnow_days AS
SELECT id, day, sum(dollars) AS dollars, min(day) OVER (PARTITION BY id) AS first_day
FROM cdnow_tx GROUP BY id, day;

-- calibration summary: x = repeat purchase days, t_x = weeks from first to
-- last purchase, t = weeks from first purchase to 1997-09-30 (date
-- difference, which reproduces cdnow_customers_summary.csv: T = 38.86 for a
-- first purchase on 1997-01-01), zbar = mean value of the repeat days
CREATE TEMP TABLE cdnow_cal AS
SELECT id,
       (count(*) - 1)::int AS x,
       (max(day) - min(day)) / 7.0::float8 AS t_x,
       (date '1997-09-30' - min(day)) / 7.0::float8 AS t,
       avg(dollars) FILTER (WHERE day > first_day)::float8 AS zbar
FROM cdnow_days WHERE day <= date '1997-09-30'
GROUP BY id;

-- the summary matches the published one (2 decimals)
CREATE TEMP TABLE cdnow_pub (id int, x int, t_x float8, t float8, zbar float8);
\copy cdnow_pub FROM '../shared/data/cdnow/cdnow_customers_summary_with_transactions.csv' WITH (FORMAT csv, HEADER true)
SELECT count(*) AS customers,
       count(*) FILTER (WHERE c.x = p.x AND round(c.t_x::numeric, 2) = round(p.t_x::numeric, 2)
                          AND round(c.t::numeric, 2) = round(p.t::numeric, 2)
                          AND round(coalesce(c.zbar, 0)::numeric, 2) = round(p.zbar::numeric, 2)) AS matching,
       count(*) FILTER (WHERE c.x > 0) AS repeat_buyers
FROM cdnow_cal c JOIN cdnow_pub p USING (id);

CREATE TEMP TABLE cdnow_fit AS SELECT (loyalty.bgnbd_fit(x, t_x, t)).* FROM cdnow_cal;
SELECT converged,
       abs(r - 0.2426) < 0.00005 AS r_ok,
       abs(alpha - 4.4136) < 0.00005 AS alpha_ok,
       abs(a - 0.7929) < 0.00005 AS a_ok,
       abs(b - 2.4259) < 0.00005 AS b_ok,
       abs(loglik - (-9582.43)) < 0.01 AS loglik_ok
FROM cdnow_fit;

-- the fitted log-likelihood is the sum of the per-customer ones
SELECT abs((SELECT sum(loyalty.bgnbd_loglik(x, t_x, t, f.r, f.alpha, f.a, f.b)) FROM cdnow_cal)
           - f.loglik) < 1e-6 AS loglik_sum_ok
FROM cdnow_fit f;

-- predictions at the fitted parameters: P(alive) in [0, 1]; expected
-- purchase days in the 39-week holdout (1997-10-01 .. 1998-06-30) against
-- the actual ones (merged purchase days in the holdout)
CREATE TEMP TABLE cdnow_pred AS
SELECT c.id,
       loyalty.bgnbd_p_alive(c.x, c.t_x, c.t, f.r, f.alpha, f.a, f.b) AS p,
       loyalty.bgnbd_expected(39, c.x, c.t_x, c.t, f.r, f.alpha, f.a, f.b) AS e
FROM cdnow_cal c, cdnow_fit f;
SELECT count(*) FILTER (WHERE p < 0 OR p > 1) = 0 AS p_alive_in_range,
       round(sum(e)) AS predicted_holdout,
       (SELECT count(*) FROM cdnow_days WHERE day > date '1997-09-30') AS actual_holdout
FROM cdnow_pred;

-- Gamma-Gamma over the repeat buyers; rows with x = 0 are skipped by the
-- aggregate (zbar is NULL for them here, which is skipped too)
CREATE TEMP TABLE cdnow_gg AS SELECT (loyalty.gamma_gamma_fit(x, zbar)).* FROM cdnow_cal;
SELECT converged,
       abs(p - 6.2496) < 0.00005 AS p_ok,
       abs(q - 3.7442) < 0.00005 AS q_ok,
       abs(gamma - 15.4435) < 0.00005 AS gamma_ok,
       abs(loglik - (-4055.92)) < 0.01 AS loglik_ok
FROM cdnow_gg;
SELECT (loyalty.gamma_gamma_fit(x, coalesce(zbar, 0))).loglik = (SELECT loglik FROM cdnow_gg) AS x0_rows_skipped
FROM cdnow_cal;
-- expected spend: population mean p gamma / (q - 1) = 35.17 for a new customer
SELECT abs(loyalty.gamma_gamma_mean(0, 0, p, q, gamma) - p * gamma / (q - 1)) < 1e-9 AS population_mean_ok,
       round(loyalty.gamma_gamma_mean(0, 0, p, q, gamma)::numeric, 2) AS population_mean
FROM cdnow_gg;
