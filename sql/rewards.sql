-- Rewards: ledger API, bad input, FIFO redemption and expiry, pending points,
-- order points with refunds under both policies, tracked tables, tiers.
SET client_min_messages = warning;
-- a clean slate, whatever ran before
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;
\set SHOW_CONTEXT never

-- run a statement, show its SQLSTATE and message (or 'ok')
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION pg_temp.entries() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM loyalty.ledger $$;
CREATE FUNCTION pg_temp.bal(c text) RETURNS text LANGUAGE sql AS $$
    SELECT format('available=%s pending=%s earned=%s redeemed=%s expiring=%s',
                  available, pending, lifetime_earned, lifetime_redeemed, expiring_points)
      FROM loyalty.balance(c) $$;

-- a customer with nothing has a zero balance
SELECT pg_temp.bal('nobody');

-- earn: an entry, available at once
SELECT loyalty.earn('alice', 100, 'signup bonus', 'signup:alice') > 0 AS earned;
SELECT pg_temp.bal('alice');

-- replay: same id, nothing written; same key with other arguments: refused
SELECT loyalty.earn('alice', 100, 'signup bonus', 'signup:alice') = (SELECT entry_id FROM loyalty.ledger WHERE idempotency_key = 'signup:alice') AS same_entry;
SELECT pg_temp.err($$SELECT loyalty.earn('alice', 101, 'signup bonus', 'signup:alice')$$);
SELECT pg_temp.err($$SELECT loyalty.earn('bob', 100, 'signup bonus', 'signup:alice')$$);
SELECT pg_temp.entries() AS entries;

-- bad input: each refused, nothing written
SELECT pg_temp.err($$SELECT loyalty.earn('alice', NULL, 'x', 'k1')$$);
SELECT pg_temp.err($$SELECT loyalty.earn('alice', 0, 'x', 'k1')$$);
SELECT pg_temp.err($$SELECT loyalty.earn('alice', -5, 'x', 'k1')$$);
SELECT pg_temp.err($$SELECT loyalty.earn(NULL, 5, 'x', 'k1')$$);
SELECT pg_temp.err($$SELECT loyalty.earn(' ', 5, 'x', 'k1')$$);
SELECT pg_temp.err($$SELECT loyalty.earn('alice', 5, 'x', '')$$);
SELECT pg_temp.err($$SELECT loyalty.earn('alice', 5, 'x', NULL)$$);
SELECT pg_temp.err($$SELECT loyalty.earn('alice', 5, 'x', 'loyalty:order:1:1')$$);
SELECT pg_temp.err($$SELECT loyalty.earn('alice', 5, 'x', 'k1', expires_at => '2030-01-01 00:00+00', available_at => '2030-02-01 00:00+00')$$);
SELECT pg_temp.err($$SELECT loyalty.earn('alice', 5, 'x', 'k1', expires_at => now() - interval '1 day')$$);
SELECT pg_temp.err($$SELECT loyalty.redeem('alice', 0, 'x', 'k1')$$);
SELECT pg_temp.err($$SELECT loyalty.redeem('alice', -1, 'x', 'k1')$$);
SELECT pg_temp.err($$SELECT loyalty.redeem('carol', 1, 'x', 'k1')$$);
SELECT pg_temp.err($$SELECT loyalty.redeem('alice', 5, 'x', ' ')$$);
SELECT pg_temp.err($$SELECT loyalty.redeem('alice', 101, 'too much', 'k1')$$);
SELECT pg_temp.entries() AS entries, (SELECT count(*) FROM loyalty.accounts) AS accounts;

-- the ledger is append-only
SELECT pg_temp.err($$UPDATE loyalty.ledger SET points = 1000$$);
SELECT pg_temp.err($$DELETE FROM loyalty.ledger$$);
SELECT pg_temp.err($$TRUNCATE loyalty.ledger$$);

-- FIFO: lots expiring first are spent first; never-expiring lots last; pending not at all
SELECT loyalty.earn('bea', 10, 'late', 'bea:late', expires_at => now() + interval '300 days') > 0,
       loyalty.earn('bea', 20, 'early', 'bea:early', expires_at => now() + interval '100 days') > 0,
       loyalty.earn('bea', 40, 'forever', 'bea:forever') > 0,
       loyalty.earn('bea', 80, 'pending', 'bea:pending', available_at => now() + interval '10 days') > 0;
SELECT pg_temp.bal('bea');
SELECT pg_temp.err($$SELECT loyalty.redeem('bea', 71, 'more than available', 'bea:r0')$$);
SELECT loyalty.redeem('bea', 25, 'voucher', 'bea:r1') > 0 AS redeemed;
SELECT e.reason, l.points, l.remaining
  FROM loyalty.point_lots l JOIN loyalty.ledger e ON e.entry_id = l.lot_id
 WHERE l.customer_id = 'bea' ORDER BY l.lot_id;
SELECT pg_temp.bal('bea');
-- replayed redemption: nothing more spent
SELECT loyalty.redeem('bea', 25, 'voucher', 'bea:r1') = (SELECT entry_id FROM loyalty.ledger WHERE idempotency_key = 'bea:r1') AS same_entry;
SELECT pg_temp.err($$SELECT loyalty.redeem('bea', 26, 'voucher', 'bea:r1')$$);
SELECT pg_temp.bal('bea');

-- expiry: exactly once, however often it runs; counted in "expiring" before
SELECT expiring_points, next_expiry_at > now() AS next_in_future FROM loyalty.balance('bea');
SELECT * FROM loyalty.expire_points(now() + interval '200 days');     -- the early lot was spent: nothing
SELECT * FROM loyalty.expire_points(now() + interval '400 days');     -- the late lot: 5 of 10 left
SELECT * FROM loyalty.expire_points(now() + interval '400 days');     -- again: nothing
SELECT * FROM loyalty.expire_points(now() + interval '500 days');
-- points expiring within the warning period (30 days) are shown as expiring
SELECT loyalty.earn('bea', 7, 'short-lived', 'bea:short', expires_at => now() + interval '10 days') > 0;
SELECT expiring_points, next_expiry_at - now() < interval '11 days' AS next_soon FROM loyalty.balance('bea');
SELECT kind, points, reason FROM loyalty.ledger WHERE customer_id = 'bea' ORDER BY entry_id;
SELECT pg_temp.err($$SELECT loyalty.expire_points(NULL)$$);
SELECT pg_temp.err($$SELECT loyalty.expire_points('infinity')$$);

-- adjustments: a reason is required; negative never goes below zero
SELECT pg_temp.err($$SELECT loyalty.adjust_points('alice', 5, NULL, 'adj:1')$$);
SELECT pg_temp.err($$SELECT loyalty.adjust_points('alice', 0, 'x', 'adj:1')$$);
SELECT pg_temp.err($$SELECT loyalty.adjust_points('alice', -101, 'too much', 'adj:1')$$);
SELECT loyalty.adjust_points('alice', -30, 'goodwill reversed', 'adj:1') > 0 AS adjusted;
SELECT pg_temp.bal('alice');

-- ---------------------------------------------------------------- order points
SELECT pg_temp.err($$SELECT loyalty.configure_rewards(refund_policy => 'sometimes')$$);
SELECT pg_temp.err($$SELECT loyalty.configure_rewards(return_window => '-1 day')$$);
SELECT pg_temp.err($$SELECT loyalty.configure_rewards(point_value => 'NaN')$$);
SELECT pg_temp.err($$SELECT loyalty.configure_rewards(earn_orders_since => 'infinity')$$);

-- earning is off by default: an order earns nothing
SELECT loyalty.record_order('olga', 'o-0', 100, now() - interval '30 days') > 0;
SELECT count(*) AS olga_entries FROM loyalty.ledger WHERE customer_id = 'olga';

SELECT earn_on_orders, return_window, refund_policy
  FROM loyalty.configure_rewards(earn_on_orders => true, return_window => '14 days',
                                 earn_orders_since => now() - interval '90 days', points_expire_after => '365 days');
-- an old order (before earning started) still earns nothing
SELECT loyalty.record_order('olga', 'o-old', 100, now() - interval '120 days') > 0;
-- 1 point per unit; delivered 30 days ago, so past the return window: available
SELECT loyalty.record_order('olga', 'o-1', 120.50, now() - interval '30 days') > 0;
-- a fresh order: pending for 14 days
SELECT loyalty.record_order('olga', 'o-2', 80, now() - interval '1 day') > 0;
SELECT pg_temp.bal('olga');
SELECT kind, points, order_ref, detail ->> 'rate' AS rate FROM loyalty.ledger WHERE customer_id = 'olga' ORDER BY entry_id;
-- replaying the order earns nothing more
SELECT loyalty.record_order('olga', 'o-1', 120.50, (SELECT ordered_at FROM loyalty.orders WHERE order_ref = 'o-1')) > 0;
SELECT pg_temp.bal('olga');

-- a partial refund takes back points in proportion: 60.25 of 120.50 -> 60 of 120
SELECT loyalty.record_refund('o-1', 60.25);
SELECT kind, points, order_ref FROM loyalty.ledger WHERE customer_id = 'olga' ORDER BY entry_id;
SELECT pg_temp.bal('olga');
-- refund the pending order in full: its pending points go
SELECT loyalty.record_refund('o-2');
SELECT pg_temp.bal('olga');

-- policy debt: spent points of a refunded order become debt, paid off by the next earn
SELECT loyalty.redeem('olga', 60, 'voucher', 'olga:r1') > 0;
SELECT loyalty.record_refund('o-1');     -- the other 60 points were spent
SELECT kind, points, detail ->> 'debt' AS debt FROM loyalty.ledger WHERE customer_id = 'olga' ORDER BY entry_id DESC LIMIT 1;
SELECT pg_temp.bal('olga'), (SELECT debt FROM loyalty.accounts WHERE customer_id = 'olga');
SELECT pg_temp.err($$SELECT loyalty.redeem('olga', 1, 'x', 'olga:r2')$$);
SELECT loyalty.earn('olga', 100, 'apology', 'olga:apology') > 0;
SELECT pg_temp.bal('olga'), (SELECT debt FROM loyalty.accounts WHERE customer_id = 'olga');

-- policy clamp: the balance stops at zero, the shortfall is in the ledger
SELECT refund_policy FROM loyalty.configure_rewards(refund_policy => 'clamp');
SELECT loyalty.record_order('pia', 'p-1', 50, now() - interval '30 days') > 0;
SELECT loyalty.redeem('pia', 40, 'voucher', 'pia:r1') > 0;
SELECT loyalty.record_refund('p-1');
SELECT kind, points, detail ->> 'shortfall' AS shortfall, detail ->> 'policy' AS policy
  FROM loyalty.ledger WHERE customer_id = 'pia' ORDER BY entry_id;
SELECT pg_temp.bal('pia'), (SELECT debt FROM loyalty.accounts WHERE customer_id = 'pia');
-- a replayed refund changes nothing
SELECT loyalty.record_refund('p-1', NULL);
SELECT count(*) AS pia_entries FROM loyalty.ledger WHERE customer_id = 'pia';

-- rules: double points by date range, a cap, and a segment-only rule that does not apply
INSERT INTO loyalty.earn_rules (name, multiplier, valid_from, valid_until)
VALUES ('double week', 2, now() - interval '3 days', now() + interval '3 days');
INSERT INTO loyalty.earn_rules (name, max_points_per_order) VALUES ('cap 150', 150);
INSERT INTO loyalty.earn_rules (name, points_per_unit, segment) VALUES ('champions +1', 1, 'Champions');
SELECT points, detail ->> 'multiplier' AS multiplier FROM loyalty.order_points('quinn', 40, now());
SELECT points FROM loyalty.order_points('quinn', 40, now() - interval '10 days');
SELECT points FROM loyalty.order_points('quinn', 500, now());
DELETE FROM loyalty.earn_rules WHERE name IN ('double week', 'cap 150', 'champions +1');

-- ---------------------------------------------------------------- tracked tables
CREATE TABLE rw_orders (id bigint PRIMARY KEY, customer bigint, total numeric, placed timestamptz,
                          status text, delivered timestamptz);
SELECT loyalty.track_orders('rw_orders', customer_column => 'customer', amount_column => 'total',
                            ordered_at_column => 'placed', order_id_column => 'id', status_column => 'status',
                            counted_statuses => ARRAY['paid', 'shipped']);
SELECT tgname FROM pg_trigger WHERE tgrelid = 'rw_orders'::regclass AND NOT tgisinternal ORDER BY 1;
SELECT pg_temp.err($$SELECT loyalty.track_deliveries('rw_orders', 'placedx')$$);
SELECT pg_temp.err($$SELECT loyalty.track_deliveries('rw_orders', 'status')$$);
SELECT pg_temp.err($$SELECT loyalty.track_deliveries('no_such_table', 'delivered')$$);
SELECT loyalty.track_deliveries('rw_orders', 'delivered');

-- the points follow the captured order (one trigger on the shop's table),
-- pending until delivery + 14 days
BEGIN;
INSERT INTO rw_orders VALUES (1, 7, 200, now() - interval '40 days', 'pending', NULL);
SELECT loyalty.apply_events() AS applied;
SELECT count(*) AS entries_while_pending FROM loyalty.ledger WHERE order_ref = '1';
UPDATE rw_orders SET status = 'paid' WHERE id = 1;
SELECT loyalty.apply_events() AS applied;
SELECT kind, points FROM loyalty.ledger WHERE order_ref = '1';
SELECT pg_temp.bal('7');
COMMIT;
UPDATE rw_orders SET status = 'shipped', delivered = now() - interval '20 days' WHERE id = 1;
SELECT loyalty.apply_events() AS applied;
SELECT pg_temp.bal('7');
-- cancelled: points reversed; paid again: earned back
UPDATE rw_orders SET status = 'cancelled' WHERE id = 1;
SELECT loyalty.apply_events() AS applied;
SELECT pg_temp.bal('7');
UPDATE rw_orders SET status = 'paid' WHERE id = 1;
SELECT loyalty.apply_events() AS applied;
SELECT pg_temp.bal('7');
DELETE FROM rw_orders WHERE id = 1;
SELECT loyalty.apply_events() AS applied;
SELECT kind, points FROM loyalty.ledger WHERE order_ref = '1' ORDER BY entry_id;
SELECT pg_temp.bal('7');

-- a points error never stops the queue: it is kept, and retried once fixed
UPDATE loyalty.rewards_settings SET return_window = '300000 years';
INSERT INTO rw_orders VALUES (2, 8, 30, now() - interval '20 days', 'paid', now() - interval '18 days');
SELECT loyalty.apply_events();   -- the order reaches loyalty.orders, its points do not
SELECT count(*) AS order_saved FROM loyalty.orders WHERE order_ref = '2';
SELECT order_ref, error FROM loyalty.points_problems WHERE resolved_at IS NULL;
UPDATE loyalty.rewards_settings SET return_window = '14 days';
SELECT loyalty.retry_points_problems();
SELECT pg_temp.bal('8');

-- switching earning off detaches the trigger; untrack drops it too
SELECT earn_on_orders FROM loyalty.configure_rewards(earn_on_orders => false);
SELECT tgname FROM pg_trigger WHERE tgrelid = 'rw_orders'::regclass AND NOT tgisinternal ORDER BY 1;
SELECT earn_on_orders FROM loyalty.configure_rewards(earn_on_orders => true);
SELECT loyalty.untrack_orders('rw_orders');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'rw_orders'::regclass AND NOT tgisinternal ORDER BY 1;

-- ---------------------------------------------------------------- tiers
INSERT INTO loyalty.tiers (tier, min_spend, earn_multiplier, benefits) VALUES
    ('Silver', 100, 1.5, '{"free_shipping": true}'), ('Gold', 500, 2, '{"free_shipping": true, "gift": true}');
SELECT tier_grace FROM loyalty.configure_rewards(tier_grace => '30 days', tier_window => '12 months');
SELECT loyalty.record_order('tom', 't-1', 150, now() - interval '300 days') > 0;
SELECT tier, qualifying_spend FROM loyalty.customer_tiers WHERE customer_id = 'tom';
-- the Silver multiplier applies to his next order
SELECT points, detail ->> 'tier' AS tier FROM loyalty.order_points('tom', 10, now());
SELECT loyalty.record_order('tom', 't-2', 400, now() - interval '10 days') > 0;
SELECT tier, qualifying_spend FROM loyalty.customer_tiers WHERE customer_id = 'tom';
-- a refund lowers spend below Gold: the downgrade waits for the grace period
SELECT loyalty.record_refund('t-2', 100);
SELECT tier, qualifying_spend, downgrade_at - now() BETWEEN interval '29 days' AND interval '30 days' AS grace_30_days
  FROM loyalty.customer_tiers WHERE customer_id = 'tom';
SELECT loyalty.recompute_tiers(now() + interval '10 days');
SELECT tier FROM loyalty.customer_tiers WHERE customer_id = 'tom';
SELECT loyalty.recompute_tiers(now() + interval '31 days');
SELECT tier, qualifying_spend FROM loyalty.customer_tiers WHERE customer_id = 'tom';
-- a year on, all his orders have left the window: down after the grace period
SELECT loyalty.recompute_tiers(now() + interval '400 days');
SELECT tier, downgrade_at IS NOT NULL AS downgrade_pending FROM loyalty.customer_tiers WHERE customer_id = 'tom';
SELECT loyalty.recompute_tiers(now() + interval '431 days');
SELECT from_tier, to_tier, qualifying_spend, reason FROM loyalty.tier_history WHERE customer_id = 'tom' ORDER BY change_id;
SELECT pg_temp.err($$SELECT loyalty.recompute_tiers(NULL)$$);
SELECT pg_temp.err($$INSERT INTO loyalty.tiers (tier, min_spend) VALUES ('Bad', -1)$$);

-- ---------------------------------------------------------------- views and the check
SELECT customer_id, available, pending, debt, tier FROM loyalty.balances ORDER BY customer_id;
SELECT outstanding_points, debt_points, point_value, outstanding_value FROM loyalty.liability;
SELECT count(*) AS mismatches FROM loyalty.verify_ledger();
-- a balance changed behind the ledger's back is reported
UPDATE loyalty.accounts SET balance = balance + 1 WHERE customer_id = 'alice';
SELECT customer_id, stored_balance, ledger_balance, lots_balance FROM loyalty.verify_ledger();
UPDATE loyalty.accounts SET balance = balance - 1 WHERE customer_id = 'alice';
SELECT count(*) AS mismatches FROM loyalty.verify_ledger();

-- the app role can earn, redeem and read balances, not write the ledger
SET ROLE loyalty_app;
SELECT loyalty.earn('uma', 5, 'app', 'uma:1') > 0;
SELECT pg_temp.bal('uma');
SELECT pg_temp.err($$INSERT INTO loyalty.ledger (customer_id, kind, points, idempotency_key) VALUES ('uma', 'earn', 1000, 'x')$$);
SELECT pg_temp.err($$SELECT loyalty.adjust_points('uma', 1000, 'x', 'uma:2')$$);
RESET ROLE;
DROP TABLE rw_orders;

-- ---------------------------------------------------------------- expiry boundaries
-- A lot is spendable while expires_at > now and expired from expires_at on
-- (redeem's C path and its SQL fallback, and expire_points, agree on "<=").
-- vic has a lot expiring at a fixed instant and one that never expires
SELECT loyalty.earn('vic', 30, 'dated', 'vic:dated', expires_at => '2099-01-01 00:00+00') > 0,
       loyalty.earn('vic', 5, 'forever', 'vic:forever') > 0;
-- one microsecond before the expiry nothing is due; at the expiry the lot is
SELECT lots > 0 AS expired_other_lots FROM loyalty.expire_points('2098-12-31 23:59:59.999999+00');
SELECT l.points, l.remaining, l.expires_at FROM loyalty.point_lots l WHERE l.customer_id = 'vic' ORDER BY l.lot_id;
BEGIN;
SELECT * FROM loyalty.expire_points('2099-01-01 00:00+00');
SELECT kind, points FROM loyalty.ledger WHERE customer_id = 'vic' ORDER BY entry_id;
ROLLBACK;
-- a lot whose expiry equals the redeeming transaction's now() is not spendable
-- (moved there behind the ledger's back: earn refuses an expiry <= now)
BEGIN;
UPDATE loyalty.point_lots SET expires_at = now() WHERE customer_id = 'vic' AND points = 30;
SELECT pg_temp.err($$SELECT loyalty.redeem('vic', 6, 'more than the unexpired lot', 'vic:r1')$$);
SELECT loyalty.redeem('vic', 5, 'the unexpired lot only', 'vic:r2') > 0 AS redeemed;
SELECT l.points, l.remaining FROM loyalty.point_lots l WHERE l.customer_id = 'vic' ORDER BY l.lot_id;
ROLLBACK;

-- the ledger's tables altered by hand: a clear error naming the column, nothing written
BEGIN;
ALTER TABLE loyalty.point_lots RENAME COLUMN remaining TO remaining_moved;
SELECT pg_temp.err($$SELECT loyalty.redeem('vic', 1, 'x', 'vic:r3')$$);
ROLLBACK;
SELECT count(*) AS vic_entries FROM loyalty.ledger WHERE customer_id = 'vic';
