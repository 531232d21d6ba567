# examples/sender.sh end to end, and loyalty.schedule() across databases.
#  1. two senders (as a login role with only loyalty_sender) drain 200 messages:
#     each delivered exactly once, bounces retried then dead-lettered;
#  2. an idle sender is woken by NOTIFY: a new message is delivered at once;
#  3. pg_cron lives in database postgres, loyalty in shop: schedule() creates
#     the jobs there through dblink (cron.schedule_in_database), a rerun
#     updates them, unschedule() removes them; without dblink dry_run gives
#     the statements; a server without pg_cron gets a clear error.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('sender');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,loyalty'
cron.database_name = 'postgres'
loyalty.database = 'shop'
loyalty.worker_enabled = off
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('shop', q{
CREATE EXTENSION loyalty;
CREATE ROLE sender LOGIN;
GRANT loyalty_sender TO sender;
SELECT max_attempts FROM loyalty.configure_outbox(max_attempts => 2, backoff_base => '1 second', backoff_max => '1 second');
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template, payload)
SELECT 'welcome:' || i, 1, i::text, 'email',
       CASE WHEN i % 50 = 0 THEN 'bounce' || i ELSE 'customer' || i || '@example.com' END,
       'welcome', jsonb_build_object('n', i, 'name', 'Customer ' || i)
  FROM generate_series(1, 200) i;
});

my $dir = PostgreSQL::Test::Utils::tempdir();
my $delivered = "$dir/delivered.log";
my %env = (
	PGHOST => $node->host, PGPORT => $node->port, PGDATABASE => 'shop', PGUSER => 'sender',
	BATCH => '20', RECHECK => '1', IDLE_EXIT => '4',
	DELIVER => qq{case "\$RECIPIENT" in bounce*) echo "550 no such user \$RECIPIENT" >&2; exit 1;; esac; cat >> $delivered},
);

sub start_sender
{
	my (%extra) = @_;
	my %e = (%ENV, %env, %extra);
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'env', (map { "$_=$e{$_}" } sort keys %e), 'bash', 'examples/sender.sh' ],
		'>', \$out, '2>', \$err);
	return ($h, \$err);
}

# 1. two senders at once
my ($h1, $err1) = start_sender();
my ($h2, $err2) = start_sender();
$h1->finish;
$h2->finish;
is($h1->result(0), 0, 'sender 1 exits cleanly when idle');
is($h2->result(0), 0, 'sender 2 exits cleanly when idle');
like($$err1 . $$err2, qr/batch: \d+ delivered/, 'senders report their batches');
# each sender did part of the work, and their reported deliveries add up to
# the 196 deliverable messages (a sender that claimed nothing fails here)
my %sent_by;
for my $s ([ 1, $$err1 ], [ 2, $$err2 ])
{
	my $n = 0;
	$n += $1 while $s->[1] =~ /batch: (\d+) delivered/g;
	$sent_by{ $s->[0] } = $n;
	cmp_ok($n, '>', 0, "sender $s->[0] delivered messages ($n)");
}
is($sent_by{1} + $sent_by{2}, 196, 'the two senders together report 196 deliveries');

open my $fh, '<', $delivered or die $!;
my @lines = <$fh>;
close $fh;
my %seen;
$seen{$_}++ for @lines;
is(scalar @lines, 196, '196 deliveries (200 messages, 4 bounce)');
is(scalar keys %seen, 196, 'no message delivered twice');
is($node->safe_psql('shop', "SELECT string_agg(status || '=' || n, ' ' ORDER BY status) FROM (SELECT status, count(*) n FROM loyalty.outbox GROUP BY status) s"),
	'dead=4 sent=196', 'outbox: 196 sent, 4 dead');
is($node->safe_psql('shop', "SELECT string_agg(DISTINCT attempts || ':' || last_error, ',') FROM loyalty.dead_letters WHERE recipient LIKE 'bounce%'"),
	'2:550 no such user bounce100,2:550 no such user bounce150,2:550 no such user bounce200,2:550 no such user bounce50',
	'bounces: two attempts each, the error kept');
is($node->safe_psql('shop', 'SELECT count(*) FROM loyalty.outbox_queue'), '0', 'nothing left in the queue');

# 2. NOTIFY wakes an idle sender (it would otherwise wait RECHECK = 60 s)
my ($h3, $err3) = start_sender(RECHECK => '60', IDLE_EXIT => '15');
sleep 2;    # the sender is listening and idle
my $t0 = time;
$node->safe_psql('shop', q{INSERT INTO loyalty.outbox (dedupe_key, customer_id, channel, recipient, template, payload)
                           VALUES ('wake', 'w', 'sms', '+15550100', 'hello', '{"n": 1000}')});
ok($node->poll_query_until('shop', "SELECT status = 'sent' FROM loyalty.outbox WHERE dedupe_key = 'wake'"), 'new message sent');
my $latency = time - $t0;
cmp_ok($latency, '<', 10, "woken by NOTIFY, not by the 60 s recheck ($latency s)");
$h3->kill_kill;

# 3. schedule() from shop into pg_cron's database (postgres) through dblink
$node->safe_psql('shop', 'CREATE EXTENSION dblink');
is($node->safe_psql('shop', "SELECT string_agg(job_name || ' ' || action, ',') FROM loyalty.schedule()"),
	'loyalty-enqueue@shop scheduled,loyalty-notify@shop scheduled,loyalty-expire@shop scheduled,loyalty-tiers@shop scheduled,loyalty-refresh@shop scheduled,loyalty-operations@shop scheduled,loyalty-health@shop scheduled,loyalty-purge@shop scheduled',
	'schedule() through dblink');
my $jobs_sql = "SELECT string_agg(jobname || ' ' || schedule || ' ' || database || ' ' || command, E'\\n' ORDER BY jobname) FROM cron.job";
my $ids_sql = "SELECT string_agg(jobid::text, ',' ORDER BY jobname) FROM cron.job";
is($node->safe_psql('postgres', $jobs_sql),
	"loyalty-enqueue\@shop * * * * * shop SELECT loyalty.enqueue_due()\n"
	. "loyalty-expire\@shop 15 3 * * * shop SELECT loyalty.expire_points()\n"
	. "loyalty-health\@shop */5 * * * * shop SELECT pg_catalog.count(*) FROM loyalty.check_health()\n"
	. "loyalty-notify\@shop * * * * * shop SELECT loyalty.notify_due()\n"
	. "loyalty-operations\@shop */5 * * * * shop SELECT loyalty.scan_operations()\n"
	. "loyalty-purge\@shop 40 4 * * * shop SELECT loyalty.purge_history()\n"
	. "loyalty-refresh\@shop 5 * * * * shop SELECT loyalty.worker_tick(3000)\n"
	. "loyalty-tiers\@shop 30 3 * * * shop SELECT loyalty.recompute_tiers()",
	'jobs stored in postgres, to run in shop');
my $ids = $node->safe_psql('postgres', $ids_sql);
$node->safe_psql('shop', "SELECT * FROM loyalty.schedule(refresh => '*/15 * * * *')");
is($node->safe_psql('postgres', $ids_sql), $ids, 'rerun: same jobs');
is($node->safe_psql('postgres', "SELECT schedule FROM cron.job WHERE jobname = 'loyalty-refresh\@shop'"), '*/15 * * * *', 'rerun: schedule updated');
is($node->safe_psql('shop', "SELECT string_agg(action, ',') FROM loyalty.unschedule()"),
	'unscheduled,unscheduled,unscheduled,unscheduled,unscheduled,unscheduled,unscheduled,unscheduled', 'unschedule() through dblink');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cron.job'), '0', 'no job left');

# a database without dblink: a clear error, and dry_run gives the statements to run in postgres
$node->safe_psql('postgres', 'CREATE DATABASE shop2');
$node->safe_psql('shop2', 'CREATE EXTENSION loyalty');
my ($rc, $stdout, $stderr) = $node->psql('shop2', 'SELECT * FROM loyalty.schedule()');
like($stderr, qr/pg_cron lives in database "postgres", and dblink is not installed here/, 'without dblink: refused');
like($stderr, qr/HINT:  Run CREATE EXTENSION dblink/, 'without dblink: a hint');
my $stmts = $node->safe_psql('shop2', 'SELECT string_agg(statement, E\';\n\') FROM loyalty.schedule(dry_run => true)');
like($stmts, qr/^SELECT cron\.schedule_in_database\('loyalty-enqueue\@shop2', '\* \* \* \* \*', 'SELECT loyalty\.enqueue_due\(\)', 'shop2'\)/,
	'dry_run: statements for the cron database');
$node->safe_psql('postgres', $stmts);
is($node->safe_psql('postgres', "SELECT count(*) FROM cron.job WHERE database = 'shop2'"), '8', 'those statements, run in postgres, make the jobs');

# a server without pg_cron
my $bare = PostgreSQL::Test::Cluster->new('bare');
$bare->init;
$bare->append_conf('postgresql.conf', "shared_preload_libraries = 'loyalty'\nloyalty.worker_enabled = off\n");
$bare->start;
$bare->safe_psql('postgres', 'CREATE EXTENSION loyalty');
($rc, $stdout, $stderr) = $bare->psql('postgres', 'SELECT * FROM loyalty.schedule()');
like($stderr, qr/ERROR:  pg_cron is not installed/, 'without pg_cron: refused');
like($stderr, qr/HINT:  Install postgresql-15-cron/, 'without pg_cron: a hint');
$bare->stop;

$node->stop;
done_testing();
