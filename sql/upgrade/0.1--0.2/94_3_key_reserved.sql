-- The reserved key prefix 'loyalty:' has one definition (src/capture.c),
-- which the SQL checks call as loyalty._key_reserved.
-- keys under the prefix 'loyalty:' are loyalty's own (order points, expiry,
-- its staff's messages); the rule is src/capture.c's, as the ledger's C path
CREATE FUNCTION loyalty._key_reserved(value text)
RETURNS boolean
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'loyalty_key_reserved';
REVOKE ALL ON FUNCTION loyalty._key_reserved(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._key_reserved(text) TO loyalty_admin;

CREATE OR REPLACE FUNCTION loyalty._check_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_key IS NULL OR btrim(p_key) = '' THEN
        RAISE EXCEPTION 'idempotency_key must not be null or empty'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass a key that names this one request, e.g. ''signup-bonus:42''; a retry with the same key changes nothing.';
    END IF;
    IF loyalty._key_problem(p_key, 500) IS NOT NULL THEN
        RAISE EXCEPTION 'idempotency_key %', loyalty._key_problem(p_key, 500)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Pass a key that names this one request, e.g. ''signup-bonus:42'': at most 500 characters, no control characters, tabs or Unicode spaces.';
    END IF;
    IF loyalty._key_reserved(p_key) THEN
        RAISE EXCEPTION 'idempotency keys starting with "loyalty:" are reserved'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'loyalty writes order points and expiry under such keys; choose another prefix.';
    END IF;
END
$$;
