# A poison row among normal orders, with the worker on: the normal orders are
# applied within seconds, the poison rows wait in loyalty.rejected_rows, and
# the queue drains (issue 11, finding 4). Also a row that passes every check
# but still fails to apply (here: a fault injected with a trigger) is split
# out of its batch and quarantined instead of stopping the worker.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('poison');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,loyalty'
cron.database_name = 'postgres'
loyalty.database = 'postgres'
loyalty.naptime = 100
});
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION loyalty CASCADE;
CREATE TABLE orders (id text PRIMARY KEY, customer text, total numeric, created_at timestamptz DEFAULT now());
SELECT loyalty.track_orders('public.orders', 'customer', 'total', 'created_at', 'id');
});

ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'loyalty worker'"),
	'worker is running');

# 50 normal orders with a numeric overflow (1e400) and a 6,400-character key among them
my $start = time();
$node->safe_psql('postgres', q{
INSERT INTO orders SELECT 'n-' || i, 'c' || (i % 7), 10 + i, now() - interval '1 day' FROM generate_series(1, 25) i;
INSERT INTO orders VALUES ('poison-amount', 'c1', 1e400, now() - interval '1 day');
INSERT INTO orders VALUES ('poison-key', repeat(md5(random()::text), 200), 5, now() - interval '1 day');
INSERT INTO orders SELECT 'n-' || i, 'c' || (i % 7), 10 + i, now() - interval '1 day' FROM generate_series(26, 50) i;
});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 50 FROM loyalty.orders WHERE order_ref LIKE 'n-%'"),
	'the 50 normal orders are applied');
my $elapsed = time() - $start;
cmp_ok($elapsed, '<', 10, "applied within seconds ($elapsed s)");
is($node->safe_psql('postgres',
	"SELECT string_agg(order_ref || ': ' || reason, '; ' ORDER BY order_ref) FROM loyalty.rejected_rows WHERE resolved_at IS NULL"),
	'poison-amount: amount exceeds 1000000000000; poison-key: customer longer than 200 characters',
	'the poison rows are quarantined with their reason');
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM loyalty.events"), 'the queue drains');
is($node->safe_psql('postgres', "SELECT sum(orders) FROM loyalty.customer_state"), '50', 'customer state counts the 50 orders');
ok($node->poll_query_until('postgres', "SELECT count(*) = 7 FROM loyalty.customer_segments"), 'and they are scored');

# a failure no check foresees: the batch is split, the failing row quarantined
$node->safe_psql('postgres', q{
CREATE FUNCTION public.fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.order_ref = 'm-13' THEN
        RAISE EXCEPTION 'injected fault';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fault BEFORE INSERT ON loyalty.orders FOR EACH ROW EXECUTE FUNCTION public.fault();
INSERT INTO orders SELECT 'm-' || i, 'd' || (i % 3), 20, now() - interval '1 hour' FROM generate_series(1, 30) i;
});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 29 FROM loyalty.orders WHERE order_ref LIKE 'm-%'"),
	'the other 29 orders of the failing batch are applied');
like($node->safe_psql('postgres', "SELECT reason FROM loyalty.rejected_rows WHERE order_ref = 'm-13' AND resolved_at IS NULL"),
	qr/could not be applied: injected fault/, 'the failing order is quarantined with the error');
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM loyalty.events"), 'the queue drains again');

# fixed: a replay applies it
$node->safe_psql('postgres', "DROP TRIGGER fault ON loyalty.orders");
is($node->safe_psql('postgres', "SELECT loyalty.replay_rejected('public.orders')"), '1', 'replay accepts the fixed row');
is($node->safe_psql('postgres', "SELECT count(*) FROM loyalty.orders WHERE order_ref = 'm-13'"), '1', 'and it is applied');

# scoring fails (a fault injected in the rescoring step): the orders of the
# round are applied and committed anyway, and the queue drains
$node->safe_psql('postgres', q{
CREATE FUNCTION public.score_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'injected scoring fault';
END $$;
CREATE TRIGGER score_fault BEFORE DELETE ON loyalty.score_queue FOR EACH ROW EXECUTE FUNCTION public.score_fault();
INSERT INTO orders SELECT 's-' || i, 'e' || (i % 4), 30, now() - interval '1 hour' FROM generate_series(1, 10) i;
});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 10 FROM loyalty.orders WHERE order_ref LIKE 's-%'"),
	'orders are applied while scoring fails');
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM loyalty.events"), 'the queue drains while scoring fails');
$node->safe_psql('postgres', "DROP TRIGGER score_fault ON loyalty.score_queue");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 4 FROM loyalty.customer_segments WHERE customer_id LIKE 'e%'"),
	'scoring catches up once fixed');
like(slurp_file($node->logfile), qr/rescoring failed \(captured changes were applied\)/, 'the scoring failure is logged');

$node->stop;
done_testing();
