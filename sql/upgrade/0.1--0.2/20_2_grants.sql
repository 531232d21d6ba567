-- Grants by least privilege (issue 11, finding 2): no TRIGGER, REFERENCES or
-- TRUNCATE for any loyalty role on loyalty's tables. (Fragments after this
-- one grant loyalty_admin SELECT, INSERT, UPDATE, DELETE, as 90_grants.sql does.)
REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA loyalty
  FROM loyalty_admin, loyalty_app, loyalty_sender, loyalty_reader, loyalty_support, loyalty_condition;
