# pg_dump / pg_restore keep the shop's loyalty data and settings: every table
# registered with pg_extension_config_dump comes back with the same rows, also
# where the shop changed or deleted what CREATE EXTENSION installed; a COPY by
# hand with check_function_bodies off is not taken for a restore; a dump
# taken at 0.1 restores into the current version.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,loyalty'
cron.database_name = 'postgres'
loyalty.database = 'postgres'
loyalty.worker_enabled = off
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('postgres', 'CREATE DATABASE restored');

$node->safe_psql('shop', q{
CREATE EXTENSION loyalty CASCADE;
SELECT count(loyalty.record_order('c' || i, 'o' || i, 10 * i, timestamptz '2026-01-01' + i * interval '1 day'))
  FROM generate_series(1, 40) i;
SELECT loyalty.record_refund('o3');
SELECT * FROM loyalty.refresh(as_of => '2026-03-01', fit_models => false);
-- 4 bins need segment rules for scores 1 to 4 (configure_rfm refuses otherwise)
UPDATE loyalty.segment_rules SET r_min = least(r_min, 4), r_max = least(r_max, 4), f_min = least(f_min, 4),
       f_max = least(f_max, 4), m_min = least(m_min, 4), m_max = least(m_max, 4);
SELECT loyalty.configure_rfm(bins => 4);
SELECT loyalty.configure_rewards(points_expire_after => '1 year');
SELECT loyalty.configure_outbox(max_attempts => 7);
SELECT loyalty.configure_journeys(cap_messages => 3);
UPDATE loyalty.journey_report_settings SET attribution_window = '14 days';
UPDATE loyalty.campaigns SET active = true, holdout_share = 0.2 WHERE name = 'welcome';
DELETE FROM loyalty.campaigns WHERE name = '5th order';
INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('10th order', 'milestone', 'sms', 'm10', '{"orders": 10}');
DELETE FROM loyalty.segment_rules WHERE segment = 'Lost';
INSERT INTO loyalty.tiers (tier, min_spend, earn_multiplier) VALUES ('Gold', 200, 1.5);
SELECT loyalty.earn('c1', 500, 'welcome bonus', 'bonus-c1');
SELECT loyalty.redeem('c1', 200, 'voucher', 'voucher-c1');
SELECT loyalty.upsert_customer('c1', name => 'Ann', email => 'ann@example.com', time_zone => 'Europe/Berlin');
SELECT loyalty.set_consent('c1', 'email', true, 'signup');
INSERT INTO loyalty.outbox (dedupe_key, customer_id, channel, recipient, template) VALUES ('x:c1:1', 'c1', 'email', 'ann@example.com', 't');
});

# every table pg_dump is told to keep, as one ordered text per table
my $tables = $node->safe_psql('shop', q{
SELECT string_agg(c.oid::regclass::text, ' ' ORDER BY c.relname)
  FROM pg_extension e, unnest(e.extconfig) t(oid) JOIN pg_class c ON c.oid = t.oid
 WHERE e.extname = 'loyalty' AND c.relkind = 'r'});
my @tables = split / /, $tables;
ok(@tables >= 20, scalar(@tables) . ' tables registered with pg_extension_config_dump');

sub contents
{
	my ($db) = @_;
	my %h;
	for my $t (@tables)
	{
		$h{$t} = $node->safe_psql($db,
			"SELECT count(*) || ' ' || coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '') FROM $t r");
	}
	return \%h;
}
my $before = contents('shop');

my $dump = PostgreSQL::Test::Utils::tempdir() . '/shop.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('shop'), '-f', $dump ], 'pg_dump');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ],
	'pg_restore without errors');

my $after = contents('restored');
for my $t (@tables)
{
	is($after->{$t}, $before->{$t}, "$t restored with the same rows");
}

is($node->safe_psql('restored', q{
SELECT (SELECT bins FROM loyalty.rfm_config) || ' ' || (SELECT max_attempts FROM loyalty.outbox_settings)
       || ' ' || (SELECT count(*) FROM loyalty.campaigns) || ' ' || (SELECT available FROM loyalty.balance('c1'))
       || ' ' || (SELECT count(*) FROM loyalty.verify_ledger())}),
	'4 7 9 300 0', 'settings, campaigns and balances as before the dump');

# the restored database keeps working: new ids do not collide with restored ones
is($node->safe_psql('restored', q{
INSERT INTO loyalty.campaigns (name, kind, channel, template, params) VALUES ('20th order', 'milestone', 'sms', 'm20', '{"orders": 20}');
SELECT count(*) FROM loyalty.campaigns}), '10', 'a new campaign after the restore');
is($node->safe_psql('restored', q{SELECT count(*) FROM loyalty.claim_messages(10, '1 minute')}), '1',
	'the restored pending message is claimable');

# outside a restore, an INSERT or COPY into a settings table does not replace it
my ($rc, $out, $err) = $node->psql('shop', q{INSERT INTO loyalty.outbox_settings DEFAULT VALUES});
like($err, qr/duplicate key/, 'a plain insert into a settings table is refused as before');

# A COPY run by hand with check_function_bodies off (as a bulk load may be)
# is not a restore: it adds its row and empties nothing, also in a database
# whose settings are still the install's.
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION loyalty');
my $n_fresh = $node->safe_psql('fresh', 'SELECT count(*) FROM loyalty.campaigns');
my $copy_one = q{SET check_function_bodies = off;
COPY loyalty.campaigns (name, kind, channel, template, params) FROM stdin;
copied	milestone	sms	m7	{"orders": 7}
\.
SELECT count(*) || ' ' || count(*) FILTER (WHERE name = 'welcome') FROM loyalty.campaigns;};
is($node->safe_psql('fresh', $copy_one), ($n_fresh + 1) . ' 1',
	'a COPY with check_function_bodies off keeps the installed campaigns and adds its row');
my $n_shop = $node->safe_psql('shop', 'SELECT count(*) FROM loyalty.campaigns');
is($node->safe_psql('shop', $copy_one), ($n_shop + 1) . ' 1', 'the same in a database in use');
# even a session set up exactly as pg_dump's scripts are leaves a table the
# shop has changed alone (the COPY adds its row)
is($node->safe_psql('shop', q{SET client_min_messages = warning; SET row_security = off;
DO $$ BEGIN PERFORM pg_catalog.set_config('search_path', '', false); END $$;
} . $copy_one =~ s/copied/copied again/r), ($n_shop + 2) . ' 1',
	'a pg_dump-like session does not empty a table written since the install');

# a plain-text dump with INSERT statements, run by psql: the first INSERT into
# each settings table empties it once, the others add their rows
my $now_shop = contents('shop');
my $sql_dump = PostgreSQL::Test::Utils::tempdir() . '/shop.sql';
$node->command_ok([ 'pg_dump', '--inserts', '-d', $node->connstr('shop'), '-f', $sql_dump ], 'pg_dump --inserts');
$node->safe_psql('postgres', 'CREATE DATABASE from_inserts');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('from_inserts'), '-f', $sql_dump ],
	'the INSERT script runs without errors');
my $from_inserts = contents('from_inserts');
is(join(',', grep { $from_inserts->{$_} ne $now_shop->{$_} } @tables), '', 'every table has the rows of the dumped database');

# A dump taken at 0.1, restored into a new database: the restore installs
# the current version (pg_dump writes CREATE EXTENSION without a version;
# restoring into a database where the extension exists already fails on
# CREATE SCHEMA loyalty, as for any extension with its own schema) and then
# loads the 0.1 rows; ALTER EXTENSION UPDATE has nothing left to do.
my $current = $node->safe_psql('postgres', "SELECT default_version FROM pg_available_extensions WHERE name = 'loyalty'");
$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('old', q{
CREATE EXTENSION loyalty VERSION '0.1' CASCADE;
SELECT count(loyalty.record_order('c' || i, 'o' || i, 10 * i, timestamptz '2026-01-01' + i * interval '1 day'))
  FROM generate_series(1, 40) i;
SELECT * FROM loyalty.refresh(as_of => '2026-03-01', fit_models => false);
SELECT loyalty.configure_rfm(bins => 4);
SELECT loyalty.configure_outbox(max_attempts => 7);
UPDATE loyalty.campaigns SET active = true, holdout_share = 0.2 WHERE name = 'welcome';
DELETE FROM loyalty.campaigns WHERE name = '5th order';
DELETE FROM loyalty.segment_rules WHERE segment = 'Lost';
SELECT loyalty.earn('c1', 500, 'welcome bonus', 'bonus-c1');
SELECT loyalty.redeem('c1', 200, 'voucher', 'voucher-c1');
INSERT INTO loyalty.outbox (dedupe_key, customer_id, channel, recipient, template) VALUES ('x:c1:1', 'c1', 'email', 'a@example.com', 't');
});
is($node->safe_psql('old', "SELECT extversion FROM pg_extension WHERE extname = 'loyalty'"), '0.1', 'a database at 0.1');
my @old_tables = split / /, $node->safe_psql('old', q{
SELECT string_agg(c.oid::regclass::text, ' ' ORDER BY c.relname)
  FROM pg_extension e, unnest(e.extconfig) t(oid) JOIN pg_class c ON c.oid = t.oid
 WHERE e.extname = 'loyalty' AND c.relkind = 'r'});
# the columns each table has at 0.1: an upgrade may add columns, never change these
my %old_cols = map {
	$_ => $node->safe_psql('old', "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
	                                WHERE attrelid = '$_'::regclass AND attnum > 0 AND NOT attisdropped")
} @old_tables;
# a restore saves campaigns through their check, which fills in parameters a
# later version added (with their defaults): those are compared on their own below
$old_cols{'loyalty.campaigns'} =~ s/, params\b//;
sub old_contents
{
	my ($db) = @_;
	return join "\n", map {
		"$_ " . $node->safe_psql($db, "SELECT count(*) || ' ' || coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '')
		                               FROM (SELECT $old_cols{$_} FROM $_) r")
	} @old_tables;
}
my $old_before = old_contents('old');
my $old_dump = PostgreSQL::Test::Utils::tempdir() . '/old.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('old'), '-f', $old_dump ], 'pg_dump at 0.1');

$node->safe_psql('postgres', 'CREATE DATABASE old_to_current');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('old_to_current'), $old_dump ],
	'the 0.1 dump restores into a database with the current version');
$node->safe_psql('old_to_current', 'ALTER EXTENSION loyalty UPDATE');
is($node->safe_psql('old_to_current', "SELECT extversion FROM pg_extension WHERE extname = 'loyalty'"), $current,
	"restored at the current version ($current)");
is(old_contents('old_to_current'), $old_before, 'every dumped table has the rows of the 0.1 database');
my $old_params = $node->safe_psql('old', "SELECT string_agg(campaign_id || '=' || params::text, ';' ORDER BY campaign_id) FROM loyalty.campaigns");
my $contained = $node->safe_psql('old_to_current', "SELECT bool_and(c.params \@> o.params::jsonb) AND count(*) = count(c.campaign_id)
  FROM (SELECT split_part(x, '=', 1)::int AS id, substr(x, strpos(x, '=') + 1) AS params FROM unnest(string_to_array('$old_params', ';')) x) o
  LEFT JOIN loyalty.campaigns c ON c.campaign_id = o.id");
is($contained, 't', 'every campaign keeps its 0.1 parameters (new ones only added)');

{
	my $db = 'old_to_current';
	is($node->safe_psql($db, q{
SELECT (SELECT bins FROM loyalty.rfm_config) || ' ' || (SELECT max_attempts FROM loyalty.outbox_settings)
       || ' ' || (SELECT available FROM loyalty.balance('c1')) || ' ' || (SELECT count(*) FROM loyalty.verify_ledger())
       || ' ' || (SELECT count(*) FROM loyalty.claim_messages(10, '1 minute'))
       || ' ' || (SELECT customers FROM loyalty.refresh(as_of => '2026-03-01', fit_models => false))}),
		'4 7 300 0 1 40', "$db: settings, balance, the pending message and refresh() work");
}

done_testing();
