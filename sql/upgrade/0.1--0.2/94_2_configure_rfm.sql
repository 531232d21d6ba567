-- configure_rfm returns the settings in force, as the other configure_*
-- functions do (it returned void): a new return type, so dropped and created
-- again, with its grants.
DROP FUNCTION loyalty.configure_rfm(integer, text, float8[], float8[], float8[]);
CREATE FUNCTION loyalty.configure_rfm(bins integer DEFAULT 5, mode text DEFAULT 'quantile',
                                      recency_bounds float8[] DEFAULT NULL,
                                      frequency_bounds float8[] DEFAULT NULL,
                                      monetary_bounds float8[] DEFAULT NULL)
RETURNS loyalty.rfm_config
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b float8[];
    nm text;
    top integer;
BEGIN
    IF bins IS NULL OR bins < 2 OR bins > 10 THEN
        RAISE EXCEPTION 'bins must be between 2 and 10, not %', coalesce(bins::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Five bins (scores 1 to 5) is the usual RFM setting.';
    END IF;
    IF mode IS NULL OR mode NOT IN ('quantile', 'fixed') THEN
        RAISE EXCEPTION 'mode must be ''quantile'' or ''fixed'', not %', coalesce(quote_literal(mode), 'NULL')
              USING ERRCODE = 'invalid_parameter_value', HINT = '''quantile'' splits customers into equal shares; ''fixed'' uses your thresholds.';
    END IF;
    IF mode = 'fixed' THEN
        FOREACH nm IN ARRAY ARRAY['recency_bounds', 'frequency_bounds', 'monetary_bounds'] LOOP
            b := CASE nm WHEN 'recency_bounds' THEN recency_bounds WHEN 'frequency_bounds' THEN frequency_bounds ELSE monetary_bounds END;
            IF b IS NULL OR cardinality(b) <> bins - 1 OR array_position(b, NULL) IS NOT NULL
               OR EXISTS (SELECT 1 FROM unnest(b) WITH ORDINALITY x(v, i) JOIN unnest(b) WITH ORDINALITY y(v, i) ON y.i = x.i + 1 WHERE y.v <= x.v)
               OR EXISTS (SELECT 1 FROM unnest(b) v WHERE v = 'NaN' OR v IN ('Infinity', '-Infinity')) THEN
                RAISE EXCEPTION '% must hold % finite thresholds in ascending order', nm, bins - 1
                      USING ERRCODE = 'invalid_parameter_value',
                            HINT = 'For 5 bins, e.g. recency_bounds => ''{30,90,180,365}'' (days), frequency_bounds => ''{1,2,4,8}''.';
            END IF;
        END LOOP;
    ELSIF recency_bounds IS NOT NULL OR frequency_bounds IS NOT NULL OR monetary_bounds IS NOT NULL THEN
        RAISE EXCEPTION 'thresholds are only used in fixed mode'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass mode => ''fixed'' with the thresholds.';
    END IF;
    -- The segment rules name score ranges (the defaults 1 to 5): with another
    -- number of bins they would silently match other customers or none (no
    -- Champions with 3 bins). Refused rather than rescaled: a rescaled rule is
    -- not the rule the shop wrote.
    SELECT max(greatest(r.r_max, r.f_max, r.m_max)) INTO top FROM loyalty.segment_rules r;
    IF top IS NOT NULL AND top <> bins THEN
        RAISE EXCEPTION 'the segment rules are written for scores 1 to %, not 1 to %', top, bins
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = format('Rewrite loyalty.segment_rules for scores 1 to %s first (UPDATE their r/f/m ranges), then change bins; or keep %s bins.', bins, top);
    END IF;
    UPDATE loyalty.rfm_config c
       SET bins = configure_rfm.bins, mode = configure_rfm.mode, recency_bounds = configure_rfm.recency_bounds,
           frequency_bounds = configure_rfm.frequency_bounds, monetary_bounds = configure_rfm.monetary_bounds;
    -- bounds of the old setting no longer apply
    DELETE FROM loyalty.rfm_bounds;
    RETURN (SELECT c FROM loyalty.rfm_config c);
END
$$;
COMMENT ON FUNCTION loyalty.configure_rfm(integer, text, float8[], float8[], float8[]) IS
'Set RFM bins and mode (quantile, or fixed thresholds); refused when the segment rules are written for another number of bins; takes effect at the next loyalty.refresh(); returns the settings in force';
REVOKE ALL ON FUNCTION loyalty.configure_rfm(integer, text, float8[], float8[], float8[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.configure_rfm(integer, text, float8[], float8[], float8[]) TO loyalty_admin;
