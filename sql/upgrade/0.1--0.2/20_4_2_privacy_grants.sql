-- Privacy, continued: the grants 90_grants.sql gives a fresh install, the restore
-- trigger of its settings table, and BI without contact data.
REVOKE ALL ON FUNCTION loyalty._contact_normal(text, text), loyalty._contact_hash(text, text), loyalty._profile_suppress(),
                       loyalty.erase_customer(text, text), loyalty.export_customer(text),
                       loyalty.due_decisions_at(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._contact_normal(text, text), loyalty._contact_hash(text, text), loyalty._profile_suppress(),
                          loyalty.erase_customer(text, text), loyalty.export_customer(text),
                          loyalty.due_decisions_at(timestamptz) TO loyalty_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON loyalty.privacy_settings, loyalty.erased_contacts, loyalty.erasures,
                                        loyalty.customer_360, loyalty.due_decisions TO loyalty_admin;
GRANT ALL ON SEQUENCE loyalty.erasures_erasure_id_seq TO loyalty_admin;
CREATE TRIGGER restore_replaces BEFORE INSERT ON loyalty.privacy_settings
    FOR EACH STATEMENT EXECUTE FUNCTION loyalty._restore_replaces();

-- BI is pseudonymous; staff read contact data
REVOKE SELECT ON loyalty.due_messages, loyalty.journey_context, loyalty.consents, loyalty.consent_history,
                 loyalty.dead_letters FROM loyalty_reader;
REVOKE EXECUTE ON FUNCTION loyalty.due_messages_at(timestamptz), loyalty.journey_context_at(timestamptz) FROM loyalty_reader;
GRANT SELECT ON loyalty.due_messages, loyalty.journey_context, loyalty.consents, loyalty.consent_history,
                loyalty.dead_letters TO loyalty_support;
GRANT EXECUTE ON FUNCTION loyalty.due_messages_at(timestamptz), loyalty.journey_context_at(timestamptz),
                          loyalty._recipient(text, text, text, text) TO loyalty_support;
