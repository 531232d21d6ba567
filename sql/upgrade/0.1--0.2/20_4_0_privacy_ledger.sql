-- Privacy (issue 11, findings 6 and 7): erasure and export, the suppression
-- list, customer_360 for loyalty_support; loyalty_reader no longer reads
-- contact data (due_decisions instead of due_messages). A customer deleted
-- from a tracked customers table is erased.
CREATE OR REPLACE FUNCTION loyalty._ledger_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.customer_id LIKE 'erased:%' AND OLD.customer_id NOT LIKE 'erased:%'
       AND (NEW.entry_id, NEW.kind, NEW.points, NEW.order_ref, NEW.lot_id, NEW.available_at, NEW.expires_at, NEW.detail,
            NEW.created_by, NEW.created_at)
           IS NOT DISTINCT FROM
           (OLD.entry_id, OLD.kind, OLD.points, OLD.order_ref, OLD.lot_id, OLD.available_at, OLD.expires_at, OLD.detail,
            OLD.created_by, OLD.created_at) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'loyalty.ledger is append-only'
          USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'Correct a balance with a new entry: loyalty.adjust_points().';
END
$$;

-- (a delete in a tracked customers table erases: loyalty._customer_deleted, 10_capture.sql)
