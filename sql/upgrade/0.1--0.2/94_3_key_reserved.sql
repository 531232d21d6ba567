-- The reserved key prefix 'loyalty:' has one definition (src/capture.c),
-- which the SQL checks call as loyalty._key_reserved.
-- keys under the prefix 'loyalty:' are loyalty's own (order points, expiry,
-- its staff's messages); the rule is src/capture.c's, as the ledger's C path
-- @function loyalty._key_reserved
REVOKE ALL ON FUNCTION loyalty._key_reserved(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._key_reserved(text) TO loyalty_admin;
