-- configure_rfm refuses bins the segment rules do not fit, and returns the
-- settings in force, as the other configure_* functions do (it returned
-- void): a new return type, so dropped and created again, with its grants.
DROP FUNCTION loyalty.configure_rfm(integer, text, float8[], float8[], float8[]);
-- @function loyalty.configure_rfm
REVOKE ALL ON FUNCTION loyalty.configure_rfm(integer, text, float8[], float8[], float8[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty.configure_rfm(integer, text, float8[], float8[], float8[]) TO loyalty_admin;
