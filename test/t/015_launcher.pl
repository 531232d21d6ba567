# The launcher: one worker for every database with the extension, without
# loyalty.database set. Two shop databases are both served; a worker killed
# (SIGTERM, SIGKILL) comes back and the other keeps working; the launcher
# survives its own SIGTERM and a restart; CREATE EXTENSION gets a worker within
# seconds, DROP EXTENSION stops it; DROP DATABASE of a served database is not
# blocked; loyalty.database restricts the databases served.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('launcher');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,loyalty'
cron.database_name = 'postgres'
loyalty.naptime = 100
loyalty.launcher_naptime = 600
restart_after_crash = on
});
$node->start;

my $setup = q{
CREATE EXTENSION loyalty;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, total numeric, created_at timestamptz DEFAULT now());
SELECT loyalty.track_orders('public.orders', 'customer_id', 'total', 'created_at', 'id');
};
$node->safe_psql('postgres', 'CREATE DATABASE shop1');
$node->safe_psql('postgres', 'CREATE DATABASE shop2');
$node->safe_psql('postgres', 'CREATE DATABASE other');

# the naptime is 10 minutes: anything within seconds comes from the wake-ups
my $t0 = time;
$node->safe_psql('shop1', $setup);
$node->safe_psql('shop2', $setup);

sub worker_pid
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'loyalty worker' AND datname = '$db'");
}

sub served
{
	my ($db, $id, $customer) = @_;
	$node->safe_psql($db, "INSERT INTO orders VALUES ($id, $customer, 10)");
	return $node->poll_query_until($db,
		"SELECT count(*) = 1 FROM loyalty.customer_state WHERE customer_id = '$customer'");
}

ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'loyalty launcher'"),
	'the launcher runs');
ok($node->poll_query_until('postgres',
	"SELECT array_agg(datname ORDER BY datname) = '{shop1,shop2}' FROM pg_stat_activity WHERE backend_type = 'loyalty worker'"),
	'one worker in each database with the extension, none elsewhere');
cmp_ok(time - $t0, '<', 20, 'the workers came within seconds of CREATE EXTENSION');
ok(served('shop1', 1, 101), 'orders in shop1 are applied without loyalty.database');
ok(served('shop2', 1, 201), 'orders in shop2 are applied without loyalty.database');

# the watchdog sees the worker, and the worker runs the watchdog
is($node->safe_psql('shop1', "SELECT status FROM loyalty.health WHERE \"check\" = 'apply_backlog'"),
	'ok', 'health: a worker serves shop1 (no pg_cron job needed)');
ok($node->poll_query_until('shop1', "SELECT count(*) > 0 FROM loyalty.health_history"),
	'the worker ran loyalty.check_health()');
my ($nr, $nout, $nerr) = $node->psql('shop1', q{LISTEN loyalty_health;
INSERT INTO loyalty.rejected_rows (source_id, order_ref, reason) VALUES (1, 'x', 'test');
SELECT count(*) FROM loyalty.check_health();
SELECT 1;});
like($nout, qr/Asynchronous notification "loyalty_health" with payload "\{"check": "rejected_rows", "status": "warning", "previous_status": "ok"\}"/,
	'check_health() NOTIFYs loyalty_health on a change');

# SIGTERM of one worker: it comes back, the other is untouched
my $p1 = worker_pid('shop1');
my $p2 = worker_pid('shop2');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($p1)");
ok(served('shop2', 2, 202), 'shop2 is served while shop1 has no worker');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'loyalty worker' AND datname = 'shop1' AND pid <> $p1"),
	'the worker of shop1 is restarted after SIGTERM');
is(worker_pid('shop2'), $p2, 'the worker of shop2 was not restarted');
ok(served('shop1', 2, 102), 'shop1 is served again');

# SIGTERM of the launcher: the workers stay, a new launcher adopts them
my $lp = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'loyalty launcher'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($lp)");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'loyalty launcher' AND pid <> $lp"),
	'the launcher is restarted after SIGTERM');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'loyalty worker'"),
	'2', 'no duplicate workers after the launcher restarted');
$p1 = worker_pid('shop1');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($p1)");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'loyalty worker' AND datname = 'shop1' AND pid <> $p1"),
	'the new launcher restarts an adopted worker');

# SIGKILL of one worker: the postmaster reinitialises; both come back
$p1 = worker_pid('shop1');
kill 'KILL', $p1;
ok($node->poll_query_until('postgres',
	"SELECT array_agg(datname ORDER BY datname) = '{shop1,shop2}' FROM pg_stat_activity WHERE backend_type = 'loyalty worker' AND pid <> $p1"),
	'both workers back after a crash');
ok(served('shop1', 3, 103) && served('shop2', 3, 203), 'both databases served after the crash');

# a restart
$node->restart;
ok($node->poll_query_until('postgres',
	"SELECT array_agg(datname ORDER BY datname) = '{shop1,shop2}' FROM pg_stat_activity WHERE backend_type = 'loyalty worker'"),
	'both workers back after a restart');
ok(served('shop1', 4, 104) && served('shop2', 4, 204), 'both databases served after the restart');

# DROP EXTENSION stops the worker; CREATE EXTENSION brings one within seconds
$node->safe_psql('shop2', 'DROP EXTENSION loyalty CASCADE');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'loyalty worker' AND datname = 'shop2'"),
	'DROP EXTENSION stops the worker');
$t0 = time;
$node->safe_psql('other', $setup);
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'loyalty worker' AND datname = 'other'"),
	'CREATE EXTENSION in another database gets a worker');
cmp_ok(time - $t0, '<', 20, 'within seconds');
ok(served('other', 1, 301), 'and it is served');

# DROP DATABASE of a served database succeeds at once (no FORCE needed)
my $pother = worker_pid('other');
ok($pother, 'other has a worker before DROP DATABASE');
$t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE other');
is($ret, 0, 'DROP DATABASE of a served database succeeds') or diag($err);
cmp_ok(time - $t0, '<', 5, 'promptly (the server would wait 5 s for other sessions, then fail)');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pother"),
	'its worker is gone');
ok(served('shop1', 5, 105), 'shop1 still served');
# so are RENAME and use as a template
($ret, $out, $err) = $node->psql('postgres', 'ALTER DATABASE shop1 RENAME TO shop1b');
is($ret, 0, 'ALTER DATABASE RENAME of a served database succeeds') or diag($err);
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'loyalty worker' AND datname = 'shop1b'"),
	'the renamed database is served again');
($ret, $out, $err) = $node->psql('postgres', 'CREATE DATABASE shop3 TEMPLATE shop1b');
is($ret, 0, 'CREATE DATABASE from a served database as template succeeds') or diag($err);
ok($node->poll_query_until('postgres',
	"SELECT array_agg(datname ORDER BY datname) = '{shop1b,shop3}' FROM pg_stat_activity WHERE backend_type = 'loyalty worker'"),
	'the copy (which has the extension) and the template are served');

# loyalty.database restricts the databases served (on reload)
$node->safe_psql('postgres', "ALTER SYSTEM SET loyalty.database = 'shop3'");
$node->reload;
ok($node->poll_query_until('postgres',
	"SELECT array_agg(datname) = '{shop3}' FROM pg_stat_activity WHERE backend_type = 'loyalty worker'"),
	'loyalty.database = shop3 serves only shop3');
like($node->safe_psql('shop1b', "SELECT status || ': ' || detail FROM loyalty.health WHERE \"check\" = 'apply_backlog'"),
	qr/^warning: no loyalty worker serves database shop1b/, 'health: shop1b left unserved is seen');
($ret, $out, $err) = $node->psql('postgres', "ALTER SYSTEM SET loyalty.database = 'a,,b'");
isnt($ret, 0, 'a malformed list is refused');

my $log = slurp_file($node->logfile);
unlike($log, qr/database "?other"? is being accessed by other users/, 'no DROP DATABASE waited on a worker');
unlike($log, qr/loyalty worker: worker_tick failed/, 'no failed rounds in the log');

$node->stop;
done_testing();
