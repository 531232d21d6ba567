-- Privileges. Nothing is executable by PUBLIC; the roles get what their job needs.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA loyalty FROM PUBLIC;

-- no TRIGGER, REFERENCES or TRUNCATE for any role: a trigger on a loyalty
-- table would run inside SECURITY DEFINER code and the worker, as the owner
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA loyalty TO loyalty_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA loyalty TO loyalty_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA loyalty TO loyalty_admin;
GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA loyalty TO loyalty_admin;

-- the shop's application
GRANT EXECUTE ON FUNCTION loyalty.record_order(text, text, numeric, timestamptz),
                          loyalty.record_refund(text, numeric, text) TO loyalty_app;
GRANT SELECT ON loyalty.customer_segments, loyalty.segment_summary TO loyalty_app;
-- customer_segments counts days with it (a view calls functions with the reader's rights)
GRANT EXECUTE ON FUNCTION loyalty._utc_days(timestamptz, timestamptz) TO loyalty_app, loyalty_reader;
-- and validate_models (model_validation, a reader's view) dates orders with this
GRANT EXECUTE ON FUNCTION loyalty._utc_date(timestamptz) TO loyalty_app, loyalty_reader;

-- BI tools: the documented views (and the functions they call)
GRANT SELECT ON loyalty.customer_segments, loyalty.segment_summary, loyalty.rejected_summary,
                loyalty.customer_scores, loyalty.model_validation, loyalty.model_fits, loyalty.current_fits,
                loyalty.current_model, loyalty.model_choice
   TO loyalty_reader;
GRANT EXECUTE ON FUNCTION loyalty.validate_models(integer) TO loyalty_reader;
GRANT SELECT ON loyalty.customer_scores TO loyalty_app;

-- journeys: the app keeps profiles and consent; BI reads the journey views
GRANT EXECUTE ON FUNCTION loyalty.upsert_customer(text, text, text, text, date, text),
                          loyalty.set_consent(text, text, boolean, text) TO loyalty_app;
-- BI is pseudonymous (no name, email, phone, birthday, recipient, consent
-- records); staff (loyalty_support) read those, and loyalty.customer_360
GRANT SELECT ON loyalty.contact_quality, loyalty.campaigns, loyalty.journey_settings TO loyalty_reader;
GRANT EXECUTE ON FUNCTION loyalty._recipient(text, text, text, text) TO loyalty_reader;
GRANT SELECT ON loyalty.due_messages, loyalty.journey_context, loyalty.consents, loyalty.consent_history,
                loyalty.dead_letters TO loyalty_support;
GRANT EXECUTE ON FUNCTION loyalty.due_messages_at(timestamptz), loyalty.journey_context_at(timestamptz),
                          loyalty._recipient(text, text, text, text) TO loyalty_support;
GRANT SELECT ON loyalty.campaign_performance, loyalty.journey_report_settings TO loyalty_reader;

-- (each fragment registers its own tables for pg_dump: pg_extension_config_dump)

-- the shop's sender: the sender API only
GRANT EXECUTE ON FUNCTION loyalty.claim_messages(integer, interval),
                          loyalty.ack_message(bigint, uuid),
                          loyalty.ack_messages(bigint[], uuid),
                          loyalty.fail_message(bigint, uuid, text, interval) TO loyalty_sender;
GRANT SELECT ON loyalty.outbox_summary TO loyalty_reader;

-- Restore. pg_dump keeps the settings tables above whole, but by the time
-- pg_restore copies their rows back, CREATE EXTENSION has already installed
-- the defaults (one settings row, the example campaigns, the default rules)
-- and the copy would fail on their keys, losing the shop's settings. So the
-- first write into one of these tables in a restore first empties it: the
-- dump holds the whole table, including defaults the shop deleted.
-- Two conditions, both needed, so that nothing else can empty a table:
--  * the session is a pg_dump script or pg_restore (loyalty._restoring());
--  * the table is exactly as the install left it: no row was written after
--    the transaction that created or last updated the extension (each row's
--    xmin is the pg_extension row's xmin). In a restore that is always so,
--    since CREATE EXTENSION just ran; in a database in use it stops being so
--    at the first change (and after ALTER EXTENSION UPDATE for rows it kept),
--    and a COPY there fails on the keys as any duplicate would. The second
--    INSERT of a pg_dump --inserts restore finds the first row written, so
--    one restore empties a table once.
CREATE FUNCTION loyalty._restore_replaces()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    untouched boolean;
BEGIN
    IF loyalty._restoring() THEN
        EXECUTE pg_catalog.format(
            'SELECT NOT EXISTS (SELECT FROM %I.%I t, pg_catalog.pg_extension e '
            'WHERE e.extname OPERATOR(pg_catalog.=) ''loyalty'' AND NOT t.xmin OPERATOR(pg_catalog.=) e.xmin)',
            TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO untouched;
        IF untouched THEN
            EXECUTE pg_catalog.format('DELETE FROM %I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION loyalty._restore_replaces() FROM PUBLIC;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['rfm_config', 'segment_rules', 'model_settings', 'rewards_settings', 'earn_rules',
                             'outbox_settings', 'journey_settings', 'journey_report_settings', 'campaigns',
                             'privacy_settings', 'health_settings']
    LOOP
        EXECUTE pg_catalog.format('CREATE TRIGGER restore_replaces BEFORE INSERT ON loyalty.%I '
                                  'FOR EACH STATEMENT EXECUTE FUNCTION loyalty._restore_replaces()', t);
    END LOOP;
END
$$;
