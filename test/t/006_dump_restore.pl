# pg_dump / pg_restore keep the shop's loyalty data and settings: every table
# registered with pg_extension_config_dump comes back with the same rows, also
# where the shop changed or deleted what CREATE EXTENSION installed.
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

done_testing();
