# The weekly digest page parses as XML with xmllint (as a mail client's HTML
# parser would see it: self-contained, inline SVG, no script), and shows the
# week's figures of loyalty.digest_figures().
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('digest');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,loyalty'
cron.database_name = 'postgres'
loyalty.worker_enabled = off
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION loyalty;
SELECT count(loyalty.record_order('c' || i % 40, 'o' || i, 10 + i % 7, now() - make_interval(days => i % 60))) FROM generate_series(1, 300) i;
SELECT count(*) FROM loyalty.refresh(fit_models => false);
UPDATE loyalty.campaigns SET active = true, name = name || ' & <friends>' WHERE campaign_id = (SELECT min(campaign_id) FROM loyalty.campaigns);
-- one message of it sent this week, so the page lists the campaign
INSERT INTO loyalty.outbox (dedupe_key, campaign_id, customer_id, channel, recipient, template)
SELECT 'digest-test:c1', min(campaign_id), 'c1', 'email', 'c1@example.com', 'tpl' FROM loyalty.campaigns;
UPDATE loyalty.outbox SET status = 'sent', sent_at = now(), attempts = 1 WHERE dedupe_key = 'digest-test:c1';
});
my $from = "now() - interval '7 days'";
my $html = $node->safe_psql('postgres', "SELECT loyalty.report_html($from, now())");
my $file = PostgreSQL::Test::Utils::tempdir() . '/digest.html';
open my $fh, '>', $file or die $!;
print $fh $html;
close $fh;

my ($out, $err) = ('', '');
ok(IPC::Run::run([ 'xmllint', '--noout', $file ], '>', \$out, '2>', \$err), 'xmllint parses the page') or diag($err);

sub xpath
{
	my ($expr) = @_;
	my ($o, $e) = ('', '');
	IPC::Run::run([ 'xmllint', '--xpath', $expr, $file ], '>', \$o, '2>', \$e);
	chomp $o;
	return $o;
}
is(xpath("count(//*[local-name()='svg'])"), '2', 'inline SVG charts: revenue by segment and weekly repeat rate (no uplift is measured yet: a note instead)');
is(xpath("count(//*[local-name()='script'] | //*[local-name()='img'] | //*[local-name()='link'])"), '0',
	'self-contained: no script, image or stylesheet link');
my $figures = $node->safe_psql('postgres', "SELECT j->>'revenue', j->>'new_customers', j->>'orders' FROM (SELECT loyalty.digest_figures($from, now()) j) x");
my ($revenue, $new, $orders) = split /\|/, $figures;
for my $f ([ 'Revenue', $revenue ], [ 'New customers', $new ], [ 'Orders', $orders ])
{
	is(xpath("string(//*[local-name()='tr'][*[1]='$f->[0]']/*[2])"), $f->[1], "the page shows $f->[0] = $f->[1], as digest_figures()");
}
my $orders_sql = $node->safe_psql('postgres', "SELECT count(*) FROM loyalty.orders WHERE counts AND ordered_at >= $from");
is($orders, $orders_sql, 'orders as loyalty.orders counts them');
like($html, qr/&amp; &lt;friends&gt;/, 'a campaign name is escaped');

$node->stop;
done_testing();
