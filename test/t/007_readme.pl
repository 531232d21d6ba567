# The README's SQL runs as written: every ```sql block, in order, in a fresh
# cluster set up as the quick start says (pg_cron and loyalty preloaded,
# serving database "shop"), so the examples cannot drift from the code.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

open(my $fh, '<', 'README.md') or die "README.md: $!";
my $readme = do { local $/; <$fh> };
close $fh;
my @blocks = $readme =~ /^```sql\n(.*?)^```/msg;
ok(@blocks >= 2, scalar(@blocks) . ' SQL blocks in the README');

my $node = PostgreSQL::Test::Cluster->new('readme');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,loyalty'
cron.database_name = 'shop'
loyalty.database = 'shop'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE shop');

my $i = 0;
for my $sql (@blocks)
{
	$i++;
	my ($first) = $sql =~ /^\s*(?:--[^\n]*\n\s*)*([^\n]*)/;
	my ($rc, $out, $err) = $node->psql('shop', $sql, on_error_stop => 1);
	is($rc, 0, "README SQL block $i runs: $first") or diag($err);
}

# what the quick start promises
ok($node->safe_psql('shop', 'SELECT count(*) FROM loyalty.segment_summary') > 0,
	'segments computed for the sample shop');
is($node->safe_psql('shop', "SELECT string_agg(jobname, ' ' ORDER BY jobname) FROM cron.job"),
	'loyalty-enqueue loyalty-expire loyalty-health loyalty-notify loyalty-operations loyalty-purge loyalty-refresh loyalty-tiers',
	'schedule() installed the jobs');
# (the worker applies the captured order within a second or so)
ok($node->poll_query_until('shop', q{
SELECT decision IN ('send', 'quiet_hours') FROM loyalty.due_messages_at(now() + interval '2 hours')
 WHERE campaign = 'welcome' AND customer_id = '1001'}),
	'the welcome message is due an hour after the first order');
is($node->safe_psql('shop', q{
SELECT string_agg(rolname || ':' || pg_has_role(rolname, 'loyalty_' || CASE rolname WHEN 'shop_app' THEN 'app'
                  WHEN 'sender' THEN 'sender' ELSE 'reader' END, 'MEMBER')::text, ' ' ORDER BY rolname)
  FROM pg_roles WHERE rolname IN ('shop_app', 'sender', 'bi')}), 'bi:true sender:true shop_app:true',
	'the three login roles have their loyalty roles');

# the operations example: the unshipped order is late, dated at its deadline
is($node->safe_psql('shop', q{
SELECT string_agg(kind, ' ' ORDER BY kind) FROM loyalty.open_issues WHERE order_ref = 'S-1'}),
	'late_delivery late_dispatch', 'the README order paid five days ago and not shipped is late (dispatch and promise)');
ok($node->safe_psql('shop', q{
SELECT bool_and(opened_at < now() - CASE kind WHEN 'late_dispatch' THEN interval '1 day' ELSE interval '1 hour' END)
  FROM loyalty.open_issues WHERE order_ref = 'S-1'}) eq 't',
	'its issues are dated at the breach, not at the scan');

done_testing();
