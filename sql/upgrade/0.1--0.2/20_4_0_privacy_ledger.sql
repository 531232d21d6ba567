-- Privacy (issue 11, findings 6 and 7): erasure and export, the suppression
-- list, customer_360 for loyalty_support; loyalty_reader no longer reads
-- contact data (due_decisions instead of due_messages). A customer deleted
-- from a tracked customers table is erased.
-- @function loyalty._ledger_append_only

-- (a delete in a tracked customers table erases: loyalty._customer_deleted, 10_capture.sql)
