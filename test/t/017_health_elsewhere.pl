# The watchdog where the regression instance cannot go (issue 15):
# 1. pg_cron in another database (cron.database_name = 'postgres', the shop in
#    'shop'): without dblink the job checks say why they cannot be evaluated;
#    with dblink they read cron.job there (the jobs loyalty.schedule() made
#    with cron.schedule_in_database); a job removed or edited there alerts
#    once and recovers once when schedule() mends it.
# 2. an extension older than the library: an installation copy whose
#    loyalty.control says 0.3 (with a no-op 0.2--0.3 script); the extension
#    created at 0.2 warns with one alert; ALTER EXTENSION loyalty UPDATE
#    brings exactly one recovery message.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# alerts and recoveries of one check written into the outbox
sub messages
{
	my ($node, $check) = @_;
	return $node->safe_psql('shop', qq{
SELECT count(*) FILTER (WHERE template = 'loyalty_health_alert') || ' alert(s), '
       || count(*) FILTER (WHERE template = 'loyalty_health_recovered') || ' recovery message(s)'
  FROM loyalty.outbox WHERE dedupe_key LIKE 'health:%' AND payload->>'check' = '$check'});
}

sub run_checks
{
	my ($node) = @_;
	# twice: a second run repeats nothing
	$node->safe_psql('shop', 'SELECT count(*) FROM loyalty.check_health()') for 1 .. 2;
}

sub check_row
{
	my ($node, $check) = @_;
	return $node->safe_psql('shop', qq{SELECT status || ' | ' || detail || ' | ' || coalesce(hint, '') FROM loyalty.health WHERE "check" = '$check'});
}

# ---------------------------------------------------------------- 1. pg_cron elsewhere
my $node = PostgreSQL::Test::Cluster->new('cron_elsewhere');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,loyalty'
cron.database_name = 'postgres'
loyalty.worker_enabled = off
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('shop', q{
CREATE EXTENSION loyalty;
SELECT loyalty.configure_health(ops_recipient => 'ops@shop.example', alert_after => '0');
});

like(check_row($node, 'jobs'),
	qr/^warning \| pg_cron keeps its jobs in database postgres \(cron.database_name\); they cannot be read from here: dblink is not installed here \| .*CREATE EXTENSION dblink.*loyalty-\*\@shop.*cron.schedule_in_database/,
	'pg_cron elsewhere, no dblink: jobs is a warning that says why and what to do');
is($node->safe_psql('shop', q{SELECT count(*) FROM loyalty.health WHERE "check" LIKE 'job %'}), '0',
	'no job row pretends to be ok');
run_checks($node);
is(messages($node, 'jobs'), '1 alert(s), 0 recovery message(s)', 'one alert');

# dblink here: schedule() makes the jobs in postgres, the checks read them there
$node->safe_psql('shop', 'CREATE EXTENSION dblink');
is($node->safe_psql('shop', 'SELECT count(*) FROM loyalty.schedule()'), '8', 'schedule() through dblink');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job WHERE jobname LIKE 'loyalty-%@shop' AND database = 'shop'}),
	'8', 'the jobs live in postgres and run in shop');
run_checks($node);
is(messages($node, 'jobs'), '1 alert(s), 1 recovery message(s)', 'jobs readable through dblink: one recovery');
is($node->safe_psql('shop', q{SELECT count(*) FROM loyalty.health WHERE "check" LIKE 'job %' AND status = 'ok'}),
	'8', 'the eight job checks are evaluated in postgres and ok');
is($node->safe_psql('shop', q{SELECT status FROM loyalty.health WHERE "check" = 'jobs_edited'}), 'ok', 'no job edited');

# a job removed in postgres
$node->safe_psql('postgres', q{SELECT cron.unschedule('loyalty-notify@shop')});
like(check_row($node, 'job loyalty-notify'),
	qr/^warning \| job loyalty-notify is missing from cron.job of database postgres \| /, 'a job removed there is missing');
run_checks($node);
is(messages($node, 'job loyalty-notify'), '1 alert(s), 0 recovery message(s)', 'one alert');
$node->safe_psql('shop', 'SELECT count(*) FROM loyalty.schedule()');
run_checks($node);
is(messages($node, 'job loyalty-notify'), '1 alert(s), 1 recovery message(s)', 'schedule() mends it: one recovery');

# a job failing there
$node->safe_psql('postgres', q{
INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, return_message, start_time, end_time)
SELECT jobid, (SELECT coalesce(max(runid), 0) + 1 FROM cron.job_run_details), 0, 'shop', current_user, command, 'failed', 'ERROR:  boom', now(), now()
  FROM cron.job WHERE jobname = 'loyalty-expire@shop'});
like(check_row($node, 'job loyalty-expire'), qr/^warning \| job loyalty-expire failed at .*ERROR:  boom/,
	'a failed run there is seen, with its error');

# a job edited by hand there
$node->safe_psql('postgres', q{SELECT cron.alter_job(jobid, schedule => '*/7 * * * *') FROM cron.job WHERE jobname = 'loyalty-health@shop'});
like(check_row($node, 'jobs_edited'),
	qr/^warning \| edited by hand: loyalty-health\@shop: schedule '\*\/7 \* \* \* \*', schedule\(\) installed '\*\/5 \* \* \* \*' \| /,
	'an edited schedule is its own finding');
run_checks($node);
is(messages($node, 'jobs_edited'), '1 alert(s), 0 recovery message(s)', 'one alert');
$node->safe_psql('shop', 'SELECT count(*) FROM loyalty.schedule()');
run_checks($node);
is(messages($node, 'jobs_edited'), '1 alert(s), 1 recovery message(s)', 'schedule() mends it: one recovery');

# purge_history() deletes this database's old loyalty run details there,
# and nothing else
$node->safe_psql('postgres', q{
INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, return_message, start_time, end_time)
SELECT j.jobid, (SELECT coalesce(max(runid), 0) FROM cron.job_run_details) + g, 0, j.database, current_user, j.command, 'succeeded', '1 row',
       now() - g * interval '1 day' + interval '1 hour', now() - g * interval '1 day' + interval '1 hour'
  FROM cron.job j, generate_series(1, 10) g
 WHERE j.jobname = 'loyalty-expire@shop'});
$node->safe_psql('postgres', q{SELECT cron.schedule('other-job', '0 0 * * *', 'SELECT 1')});
$node->safe_psql('postgres', q{
INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, return_message, start_time, end_time)
SELECT jobid, (SELECT coalesce(max(runid), 0) + 1 FROM cron.job_run_details), 0, 'postgres', current_user, command, 'succeeded', '1 row',
       now() - interval '30 days', now() - interval '30 days'
  FROM cron.job WHERE jobname = 'other-job'});
is($node->safe_psql('shop', 'SELECT cron_runs FROM loyalty.purge_history()'), '3',
	'purge_history() deletes the run details of its jobs older than retain_cron_runs (7 days) in pg_cron\'s database');
is($node->safe_psql('postgres', q{
SELECT string_agg(j.jobname || ':' || n, ' ' ORDER BY j.jobname) FROM (
  SELECT d.jobid, count(*) AS n FROM cron.job_run_details d WHERE d.end_time < now() - interval '7 days' GROUP BY 1) x
  JOIN cron.job j USING (jobid)}), 'other-job:1', 'only loyalty\'s old run details went');

# pg_cron's tables cannot be read there any more: warning with the error
$node->safe_psql('postgres', 'DROP EXTENSION pg_cron');
like(check_row($node, 'jobs'), qr/^warning \| pg_cron keeps its jobs in database postgres .*cannot be read from here: .*cron\.job.* does not exist/s,
	'pg_cron\'s tables unreadable there: a warning with the error');
is($node->safe_psql('shop', q{SELECT count(*) FROM loyalty.health WHERE "check" LIKE 'job %' OR "check" = 'jobs_edited'}), '0',
	'and no job row pretends to be ok');
$node->stop;

# ---------------------------------------------------------------- 2. extension older than the library
# A copy of the installation (bin, lib and share keep their relative places,
# so the copy finds its own share directory) whose control file says 0.3.
my $root = PostgreSQL::Test::Utils::tempdir;
my %dir;
for my $what (qw(bindir pkglibdir sharedir))
{
	chomp($dir{$what} = `pg_config --$what`);
	make_path(dirname("$root$dir{$what}"));
	system('cp', '-a', $dir{$what}, "$root$dir{$what}") == 0 or die "cannot copy $dir{$what}";
}
my $ext = "$root$dir{sharedir}/extension";
my $control = slurp_file("$ext/loyalty.control");
$control =~ s/^default_version = '0\.2'/default_version = '0.3'/m or die 'loyalty.control has no default_version 0.2';
open(my $fh, '>', "$ext/loyalty.control") or die $!;
print $fh $control;
close $fh;
open($fh, '>', "$ext/loyalty--0.2--0.3.sql") or die $!;
print $fh "-- test only: a release that changes nothing\n";
close $fh;

my $new = PostgreSQL::Test::Cluster->new('newer_library', install_path => dirname("$root$dir{bindir}"));
$new->init;
$new->append_conf('postgresql.conf', "shared_preload_libraries = 'loyalty'\nloyalty.worker_enabled = off\n");
$new->start;
$new->safe_psql('postgres', 'CREATE DATABASE shop');
$new->safe_psql('shop', q{
CREATE EXTENSION loyalty VERSION '0.2';
SELECT loyalty.configure_health(ops_recipient => 'ops@shop.example', alert_after => '0');
});
like(check_row($new, 'extension_version'),
	qr/^warning \| installed version 0\.2, the library on the server is 0\.3 \| Run ALTER EXTENSION loyalty UPDATE/,
	'the extension at 0.2 under a 0.3 library: warning');
run_checks($new);
is(messages($new, 'extension_version'), '1 alert(s), 0 recovery message(s)', 'one alert');
$new->safe_psql('shop', 'ALTER EXTENSION loyalty UPDATE');
is($new->safe_psql('shop', q{SELECT extversion FROM pg_extension WHERE extname = 'loyalty'}), '0.3', 'updated');
run_checks($new);
is(messages($new, 'extension_version'), '1 alert(s), 1 recovery message(s)', 'after ALTER EXTENSION UPDATE: one recovery');
like(check_row($new, 'extension_version'), qr/^ok \| version 0\.3, as the library/, 'ok');
$new->stop;

done_testing();
