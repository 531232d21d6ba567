# The background worker (loyalty.database set: the old single-name meaning): picks up committed orders, reloads its settings,
# survives SIGTERM, a crash and a restart without losing an order.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,loyalty'
cron.database_name = 'postgres'
loyalty.database = 'postgres'
loyalty.naptime = 100
restart_after_crash = on
});
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION loyalty CASCADE;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, total numeric, created_at timestamptz DEFAULT now());
SELECT loyalty.track_orders('public.orders', 'customer_id', 'total', 'created_at', 'id');
});

# the worker runs and is visible
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'loyalty worker' AND application_name = 'loyalty worker'"),
	'worker is visible in pg_stat_activity');
my $pid = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'loyalty worker'");

# a committed order reaches customer state and segments without any call
$node->safe_psql('postgres', "INSERT INTO orders VALUES (1, 42, 10)");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM loyalty.customer_segments WHERE customer_id = '42' AND frequency = 1"),
	'worker applies and scores a committed order');
is($node->safe_psql('postgres', "SELECT count(*) FROM loyalty.events"), '0', 'queue drained');

# a second order of the same customer is rescored incrementally
$node->safe_psql('postgres', "INSERT INTO orders VALUES (2, 42, 15)");
ok($node->poll_query_until('postgres',
	"SELECT frequency = 2 AND monetary = 25 FROM loyalty.customer_segments WHERE customer_id = '42'"),
	'worker rescores a changed customer');

# SIGHUP: a new naptime is taken without a restart
$node->safe_psql('postgres', "ALTER SYSTEM SET loyalty.naptime = 50");
$node->reload;
$node->safe_psql('postgres', "INSERT INTO orders VALUES (3, 43, 5)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM loyalty.customer_segments WHERE customer_id = '43'"),
	'worker keeps working after reload');
is($node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'loyalty worker'"),
	$pid, 'reload did not restart the worker');

# SIGTERM: the worker exits and the postmaster starts it again
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'loyalty worker' AND pid <> $pid"),
	'worker restarted after SIGTERM');
# orders committed meanwhile are not lost
$node->safe_psql('postgres', "INSERT INTO orders VALUES (4, 44, 7)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM loyalty.customer_segments WHERE customer_id = '44'"),
	'order committed around the restart is picked up');

# a crash (SIGKILL): the postmaster reinitialises and the worker comes back
$pid = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'loyalty worker'");
kill 'KILL', $pid;
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'loyalty worker' AND pid <> $pid"),
	'worker back after a crash');
$node->safe_psql('postgres', "INSERT INTO orders VALUES (5, 45, 9)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM loyalty.customer_segments WHERE customer_id = '45'"),
	'worker works after the crash');

# orders written while the server is down for the worker (worker off) are caught up after restart
$node->append_conf('postgresql.conf', "loyalty.worker_enabled = off");
$node->restart;
$node->safe_psql('postgres', "INSERT INTO orders VALUES (6, 46, 11), (7, 42, 1)");
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'loyalty worker'"),
	'0', 'worker disabled');
is($node->safe_psql('postgres', "SELECT count(*) FROM loyalty.events"), '2', 'changes wait in the queue');
$node->append_conf('postgresql.conf', "loyalty.worker_enabled = on");
$node->restart;
ok($node->poll_query_until('postgres',
	"SELECT (SELECT count(*) FROM loyalty.customer_segments WHERE customer_id = '46') = 1
	    AND (SELECT frequency FROM loyalty.customer_segments WHERE customer_id = '42') = 3"),
	'worker catches up after a restart');
is($node->safe_psql('postgres', "SELECT count(*) FROM loyalty.customer_state WHERE customer_id = '42' AND orders = 3"),
	'1', 'no order counted twice');

# a database without the extension: the worker leaves, and comes back with it
$node->safe_psql('postgres', "DROP EXTENSION loyalty CASCADE");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'loyalty worker'"),
	'the worker leaves a database without the extension');
$node->safe_psql('postgres', "CREATE EXTENSION loyalty");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'loyalty worker'"),
	'worker back once the extension is created again');
my $log = slurp_file($node->logfile);
unlike($log, qr/could not run loyalty.worker_tick/, 'no failed rounds in the log');

$node->stop;
done_testing();
