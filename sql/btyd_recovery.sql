-- Parameter recovery: simulate customers from known BG/NBD and Gamma-Gamma
-- parameters with a seeded generator, fit, and check every estimate lies
-- within 2 standard errors (observed information from a numerical Hessian
-- of the summed log-likelihood in log-parameters).  setseed() makes the
-- sample, and so every printed boolean, identical on every run.

-- standard normal (Box-Muller) and gamma(shape, rate) (Marsaglia-Tsang)
CREATE FUNCTION pg_temp.rnorm() RETURNS float8 LANGUAGE sql AS
$$ SELECT sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) $$;
CREATE FUNCTION pg_temp.rgamma(shape float8, rate float8) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
    boost float8 := 1;
    d float8; c float8; z float8; v float8; u float8;
BEGIN
    IF shape < 1 THEN
        boost := (1 - random()) ^ (1 / shape);
        shape := shape + 1;
    END IF;
    d := shape - 1.0 / 3;
    c := 1 / sqrt(9 * d);
    LOOP
        z := pg_temp.rnorm();
        v := (1 + c * z) ^ 3;
        CONTINUE WHEN v <= 0;
        u := 1 - random();
        IF ln(u) < 0.5 * z * z + d * (1 - v + ln(v)) THEN
            RETURN d * v / rate * boost;
        END IF;
    END LOOP;
END $$;

-- BG/NBD customers: lambda ~ Gamma(r, alpha), p ~ Beta(a, b); Poisson
-- purchases at rate lambda, dropout with probability p after each one;
-- first purchases spread over 12 weeks, observed until week 52.
-- Each repeat purchase also gets a spend: nu ~ Gamma(q, gamma) per
-- customer, each transaction ~ Gamma(p_gg, nu).
CREATE FUNCTION pg_temp.simulate(n int, r float8, alpha float8, a float8, b float8,
                                 p_gg float8, q_gg float8, g_gg float8)
RETURNS TABLE (x int, t_x float8, t float8, mean_value float8)
LANGUAGE plpgsql AS $$
DECLARE
    lam float8; p float8; nu float8; ga float8; now_t float8; spend float8;
BEGIN
    FOR i IN 1..n LOOP
        lam := pg_temp.rgamma(r, alpha);
        ga := pg_temp.rgamma(a, 1);
        p := ga / (ga + pg_temp.rgamma(b, 1));
        nu := pg_temp.rgamma(q_gg, g_gg);
        t := 52 - 12 * random();
        x := 0; t_x := 0; now_t := 0; spend := 0;
        LOOP
            now_t := now_t - ln(1 - random()) / lam;
            EXIT WHEN now_t > t;
            x := x + 1;
            t_x := now_t;
            spend := spend + pg_temp.rgamma(p_gg, nu);
            EXIT WHEN random() < p;
        END LOOP;
        mean_value := CASE WHEN x > 0 THEN spend / x END;
        RETURN NEXT;
    END LOOP;
END $$;

-- observed information -H at theta (log-parameters) of the summed
-- log-likelihood computed by fn(theta float8[]), by central differences;
-- returns the standard errors sqrt(diag((-H)^-1)) of theta
CREATE FUNCTION pg_temp.std_errors(fn text, theta float8[]) RETURNS float8[]
LANGUAGE plpgsql AS $$
DECLARE
    n int := cardinality(theta);
    h float8 := 1e-3;
    m float8[];           -- n x (2n) augmented matrix [ -H | I ], row-major
    f0 float8;
    fpp float8; fpm float8; fmp float8; fmm float8;
    th float8[];
    piv float8; fac float8;
    se float8[] := '{}';
BEGIN
    EXECUTE format('SELECT %s($1)', fn) INTO f0 USING theta;
    m := array_fill(0::float8, ARRAY[n * 2 * n]);
    FOR i IN 1..n LOOP
        FOR j IN i..n LOOP
            th := theta; th[i] := th[i] + h; th[j] := th[j] + h;
            EXECUTE format('SELECT %s($1)', fn) INTO fpp USING th;
            th := theta; th[i] := th[i] - h; th[j] := th[j] - h;
            EXECUTE format('SELECT %s($1)', fn) INTO fmm USING th;
            IF i = j THEN
                -- f'' = (f(+2h) - 2 f + f(-2h)) / (2h)^2
                m[(i - 1) * 2 * n + j] := -(fpp - 2 * f0 + fmm) / (4 * h * h);
            ELSE
                th := theta; th[i] := th[i] + h; th[j] := th[j] - h;
                EXECUTE format('SELECT %s($1)', fn) INTO fpm USING th;
                th := theta; th[i] := th[i] - h; th[j] := th[j] + h;
                EXECUTE format('SELECT %s($1)', fn) INTO fmp USING th;
                m[(i - 1) * 2 * n + j] := -(fpp - fpm - fmp + fmm) / (4 * h * h);
                m[(j - 1) * 2 * n + i] := m[(i - 1) * 2 * n + j];
            END IF;
        END LOOP;
        m[(i - 1) * 2 * n + n + i] := 1;
    END LOOP;
    -- Gauss-Jordan (the information matrix is positive definite at the MLE)
    FOR k IN 1..n LOOP
        piv := m[(k - 1) * 2 * n + k];
        FOR c IN 1..2 * n LOOP
            m[(k - 1) * 2 * n + c] := m[(k - 1) * 2 * n + c] / piv;
        END LOOP;
        FOR i IN 1..n LOOP
            CONTINUE WHEN i = k;
            fac := m[(i - 1) * 2 * n + k];
            FOR c IN 1..2 * n LOOP
                m[(i - 1) * 2 * n + c] := m[(i - 1) * 2 * n + c] - fac * m[(k - 1) * 2 * n + c];
            END LOOP;
        END LOOP;
    END LOOP;
    FOR i IN 1..n LOOP
        se := se || sqrt(m[(i - 1) * 2 * n + n + i]);
    END LOOP;
    RETURN se;
END $$;

SELECT setseed(0.4242);
CREATE TEMP TABLE sim AS
SELECT * FROM pg_temp.simulate(20000, 0.5, 6.0, 0.7, 2.5, 6.0, 4.0, 15.0);
SELECT count(*) AS customers, count(*) FILTER (WHERE x > 0) > 5000 AS enough_repeat_buyers,
       max(x) > 20 AS some_heavy_buyers
FROM sim;

-- BG/NBD: the fit, then z-scores (estimate - truth) / SE on the log scale
CREATE FUNCTION pg_temp.bg_ll(th float8[]) RETURNS float8 LANGUAGE sql AS
$$ SELECT sum(loyalty.bgnbd_loglik(x, t_x, t, exp(th[1]), exp(th[2]), exp(th[3]), exp(th[4]))) FROM sim $$;
CREATE TEMP TABLE bg AS SELECT (loyalty.bgnbd_fit(x, t_x, t)).* FROM sim;
CREATE TEMP TABLE bg_z AS
SELECT k.name, (ln(k.est) - ln(k.truth)) / se.v[k.i] AS z
FROM bg,
     LATERAL (SELECT pg_temp.std_errors('pg_temp.bg_ll',
                     ARRAY[ln(bg.r), ln(bg.alpha), ln(bg.a), ln(bg.b)]) AS v) se,
     LATERAL (VALUES (1, 'r', bg.r, 0.5), (2, 'alpha', bg.alpha, 6.0),
                     (3, 'a', bg.a, 0.7), (4, 'b', bg.b, 2.5)) k(i, name, est, truth);
SELECT converged FROM bg;
SELECT name, abs(z) < 2 AS within_2_se FROM bg_z ORDER BY name;

-- Gamma-Gamma on the simulated repeat buyers (x = 0 rows skipped)
CREATE FUNCTION pg_temp.gg_ll(th float8[]) RETURNS float8 LANGUAGE sql AS
$$ SELECT sum(loyalty.gamma_gamma_loglik(x, mean_value, exp(th[1]), exp(th[2]), exp(th[3]))) FROM sim WHERE x > 0 $$;
CREATE TEMP TABLE gg AS SELECT (loyalty.gamma_gamma_fit(x, mean_value)).* FROM sim;
CREATE TEMP TABLE gg_z AS
SELECT k.name, (ln(k.est) - ln(k.truth)) / se.v[k.i] AS z
FROM gg,
     LATERAL (SELECT pg_temp.std_errors('pg_temp.gg_ll',
                     ARRAY[ln(gg.p), ln(gg.q), ln(gg.gamma)]) AS v) se,
     LATERAL (VALUES (1, 'p', gg.p, 6.0), (2, 'q', gg.q, 4.0), (3, 'gamma', gg.gamma, 15.0)) k(i, name, est, truth);
SELECT converged FROM gg;
SELECT name, abs(z) < 2 AS within_2_se FROM gg_z ORDER BY name;

-- MBG/NBD: as BG/NBD, but the dropout coin is also flipped at the first
-- purchase (time 0), so some customers never come back
CREATE FUNCTION pg_temp.simulate_mbg(n int, r float8, alpha float8, a float8, b float8)
RETURNS TABLE (x int, t_x float8, t float8)
LANGUAGE plpgsql AS $$
DECLARE
    lam float8; p float8; ga float8; now_t float8;
BEGIN
    FOR i IN 1..n LOOP
        lam := pg_temp.rgamma(r, alpha);
        ga := pg_temp.rgamma(a, 1);
        p := ga / (ga + pg_temp.rgamma(b, 1));
        t := 52 - 12 * random();
        x := 0; t_x := 0; now_t := 0;
        IF random() >= p THEN
            LOOP
                now_t := now_t - ln(1 - random()) / lam;
                EXIT WHEN now_t > t;
                x := x + 1;
                t_x := now_t;
                EXIT WHEN random() < p;
            END LOOP;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
SELECT setseed(0.3131);
CREATE TEMP TABLE sim_mbg AS SELECT * FROM pg_temp.simulate_mbg(20000, 0.5, 6.0, 0.7, 2.5);
CREATE FUNCTION pg_temp.mbg_ll(th float8[]) RETURNS float8 LANGUAGE sql AS
$$ SELECT sum(loyalty.mbgnbd_loglik(x, t_x, t, exp(th[1]), exp(th[2]), exp(th[3]), exp(th[4]))) FROM sim_mbg $$;
CREATE TEMP TABLE mbg AS SELECT (loyalty.mbgnbd_fit(x, t_x, t)).* FROM sim_mbg;
CREATE TEMP TABLE mbg_z AS
SELECT k.name, (ln(k.est) - ln(k.truth)) / se.v[k.i] AS z
FROM mbg,
     LATERAL (SELECT pg_temp.std_errors('pg_temp.mbg_ll',
                     ARRAY[ln(mbg.r), ln(mbg.alpha), ln(mbg.a), ln(mbg.b)]) AS v) se,
     LATERAL (VALUES (1, 'r', mbg.r, 0.5), (2, 'alpha', mbg.alpha, 6.0),
                     (3, 'a', mbg.a, 0.7), (4, 'b', mbg.b, 2.5)) k(i, name, est, truth);
SELECT converged FROM mbg;
SELECT name, abs(z) < 2 AS within_2_se FROM mbg_z ORDER BY name;

-- Pareto/NBD: lambda ~ Gamma(r, alpha), lifetime ~ Exponential(mu),
-- mu ~ Gamma(s, beta); Poisson purchases while alive
CREATE FUNCTION pg_temp.simulate_pnbd(n int, r float8, alpha float8, s float8, beta float8)
RETURNS TABLE (x int, t_x float8, t float8)
LANGUAGE plpgsql AS $$
DECLARE
    lam float8; life float8; now_t float8;
BEGIN
    FOR i IN 1..n LOOP
        lam := pg_temp.rgamma(r, alpha);
        life := -ln(1 - random()) / pg_temp.rgamma(s, beta);
        t := 52 - 12 * random();
        x := 0; t_x := 0; now_t := 0;
        LOOP
            now_t := now_t - ln(1 - random()) / lam;
            EXIT WHEN now_t > least(t, life);
            x := x + 1;
            t_x := now_t;
        END LOOP;
        RETURN NEXT;
    END LOOP;
END $$;
SELECT setseed(0.2727);
CREATE TEMP TABLE sim_pnbd AS SELECT * FROM pg_temp.simulate_pnbd(20000, 0.5, 8.0, 0.6, 10.0);
CREATE FUNCTION pg_temp.pnbd_ll(th float8[]) RETURNS float8 LANGUAGE sql AS
$$ SELECT sum(loyalty.pareto_nbd_loglik(x, t_x, t, exp(th[1]), exp(th[2]), exp(th[3]), exp(th[4]))) FROM sim_pnbd $$;
CREATE TEMP TABLE pnbd AS SELECT (loyalty.pareto_nbd_fit(x, t_x, t)).* FROM sim_pnbd;
CREATE TEMP TABLE pnbd_z AS
SELECT k.name, (ln(k.est) - ln(k.truth)) / se.v[k.i] AS z
FROM pnbd,
     LATERAL (SELECT pg_temp.std_errors('pg_temp.pnbd_ll',
                     ARRAY[ln(pnbd.r), ln(pnbd.alpha), ln(pnbd.s), ln(pnbd.beta)]) AS v) se,
     LATERAL (VALUES (1, 'r', pnbd.r, 0.5), (2, 'alpha', pnbd.alpha, 8.0),
                     (3, 's', pnbd.s, 0.6), (4, 'beta', pnbd.beta, 10.0)) k(i, name, est, truth);
SELECT converged FROM pnbd;
SELECT name, abs(z) < 2 AS within_2_se FROM pnbd_z ORDER BY name;
