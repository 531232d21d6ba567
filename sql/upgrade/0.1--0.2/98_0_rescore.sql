-- rescore (issue 12: the pass over everyone of _store_scores 3x faster).
-- _store_scores itself and stored_scores (now WITH fillfactor) are new in
-- 0.2 and created by 40_decisions.sql from their current definitions; the
-- functions they now use are new here.
-- @function loyalty._score_values
-- @function loyalty._score_rows

-- new functions: the install's blanket privileges (90_grants.sql), repeated
REVOKE ALL ON FUNCTION loyalty._score_values(timestamptz, timestamptz, integer, numeric, numeric, numeric, timestamptz,
                                             text, float8, float8, float8, float8, float8, boolean, float8, float8,
                                             float8, float8),
                       loyalty._score_rows(timestamptz, text[], text, float8, float8, float8, float8, float8, bigint,
                                           bigint, bigint, float8, float8, float8, integer, numeric, numeric)
   FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._score_values(timestamptz, timestamptz, integer, numeric, numeric, numeric, timestamptz,
                                                text, float8, float8, float8, float8, float8, boolean, float8, float8,
                                                float8, float8),
                          loyalty._score_rows(timestamptz, text[], text, float8, float8, float8, float8, float8, bigint,
                                              bigint, bigint, float8, float8, float8, integer, numeric, numeric)
   TO loyalty_admin;
