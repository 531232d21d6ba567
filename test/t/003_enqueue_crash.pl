# enqueue_due survives a crash: the server is killed while enqueue_due() is
# writing the outbox for a few thousand customers (first a backend SIGKILL,
# then an immediate shutdown); after restart enqueue_due() runs again at the
# same as_of and the outbox holds exactly the rows of an uninterrupted run on
# an identical copy of the database: none lost, none twice.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('enqueue');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,loyalty'
cron.database_name = 'postgres'
loyalty.database = 'postgres'
loyalty.worker_enabled = off
restart_after_crash = on
});
$node->start;

my $customers = 3000;
my $as_of = '2026-06-15 12:00:00+00';

$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('shop', qq{
CREATE EXTENSION loyalty CASCADE;
SELECT setseed(0.3);
-- orders earn points (so that some are about to expire at as_of)
SELECT earn_on_orders FROM loyalty.configure_rewards(earn_on_orders => true, earn_orders_since => '2025-01-01',
                                                     return_window => '0', points_expire_after => '350 days');
-- a year of orders up to as_of: one per customer, a third order again
SELECT count(loyalty.record_order('c' || c, 'o' || g, 20 + (g % 7) * 30,
                                  timestamptz '$as_of' - (g % 365) * interval '1 day' - (g % 24) * interval '1 hour'))
  FROM (SELECT g, CASE WHEN g <= $customers THEN g ELSE 1 + (g * 7) % $customers END AS c
          FROM generate_series(1, $customers * 4 / 3) g) s;
-- profiles (a few time zones: some customers are in quiet hours at as_of),
-- birthdays spread over the year, email consent for most
SELECT count(loyalty.upsert_customer('c' || i, 'Customer ' || i, 'c' || i || '\@example.com', NULL,
                                     date '1980-01-01' + (i * 37) % 366,
                                     (ARRAY['Europe/Berlin', 'Asia/Tokyo', 'America/New_York'])[1 + i % 3]))
  FROM generate_series(1, $customers) i;
SELECT count(loyalty.set_consent('c' || i, 'email', true, 'signup')) FROM generate_series(1, $customers) i WHERE i % 10 <> 0;
SELECT customers FROM loyalty.refresh(as_of => '$as_of');
-- every example campaign on, since long before as_of; win-back since the day
-- before (every customer lapsed by then is due at its start)
UPDATE loyalty.campaigns SET active = true,
       active_from = CASE WHEN kind = 'win_back' THEN timestamptz '$as_of' - interval '1 day' ELSE '2025-01-01' END;
});

# Two customers whose messages are worked out by hand (the crash-vs-reference
# comparison cannot see a rule both runs get wrong). hand1 ordered 2 hours
# before as_of: the welcome (1 hour after the first order) is due now.
# hand2 ordered 7 days and 1 hour before: its welcome, valid for 3 days,
# lapsed before this first run (an occasion is recorded expired only when it
# falls after the last run's as_of), so only the order follow-up (7 days
# after the order) is due now. Both keys fall outside the 10% holdout of
# these campaigns (loyalty._holdout_draw 0.30/0.71 and 0.25/0.84); UTC, so
# no quiet hours at 12:00.
$node->safe_psql('shop', qq{
SELECT loyalty.record_order('hand1', 'hand1-1', 50, timestamptz '$as_of' - interval '2 hours'),
       loyalty.record_order('hand2', 'hand2-1', 50, timestamptz '$as_of' - interval '7 days 1 hour');
SELECT loyalty.upsert_customer(c, 'Hand', c || '\@example.com', NULL, NULL, 'UTC'), loyalty.set_consent(c, 'email', true, 'signup')
  FROM unnest(ARRAY['hand1', 'hand2']) c;
SELECT customers FROM loyalty.refresh(as_of => '$as_of');
});
my $hand_sql = q{SELECT string_agg(format('%s %s %s %s occasion %s', c.name, o.dedupe_key, o.status, o.due_at AT TIME ZONE 'UTC',
                                          o.payload #>> '{why,occasion_at}'), E'\n'
                                   ORDER BY o.dedupe_key)
                   FROM loyalty.outbox o JOIN loyalty.campaigns c USING (campaign_id) WHERE o.customer_id LIKE 'hand_'};
my $hand_expected = "welcome 1:hand1:first pending 2026-06-15 12:00:00 occasion 2026-06-15T11:00:00+00:00\n"
  . "order follow-up 2:hand2:order:hand2-1 pending 2026-06-15 12:00:00 occasion 2026-06-15T11:00:00+00:00";

# an identical copy, for the reference run
$node->safe_psql('postgres', 'CREATE DATABASE reference TEMPLATE shop');

# the outbox as a comparable listing (everything enqueue_due decides; not
# the message ids or created_at)
my $listing = q{SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s', dedupe_key, campaign_id, customer_id, channel,
                                         recipient, status, due_at, expires_at, payload),
                                 E'\n' ORDER BY dedupe_key) FROM loyalty.outbox};

$node->safe_psql('reference', "SELECT count(*) FROM loyalty.enqueue_due('$as_of')");
my $expected = $node->safe_psql('reference', $listing);
my $expected_rows = $node->safe_psql('reference', 'SELECT count(*) FROM loyalty.outbox');
ok($expected_rows > 1000, "the reference run writes $expected_rows messages");
note $node->safe_psql('reference', q{SELECT string_agg(s, ', ') FROM (SELECT c.kind || ' ' || o.status || ' ' || count(*) AS s
  FROM loyalty.outbox o JOIN loyalty.campaigns c USING (campaign_id) GROUP BY c.kind, o.status ORDER BY 1) x});

# Slow the writer down so it can be caught mid-run: a test-only trigger that
# sleeps a little per outbox row (the rows themselves are unchanged).
$node->safe_psql('shop', q{
CREATE FUNCTION public.slow_outbox() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$;
CREATE TRIGGER slow_outbox BEFORE INSERT ON loyalty.outbox FOR EACH ROW EXECUTE FUNCTION public.slow_outbox();
});

# start enqueue_due in the background; wait until it has written some rows
# (the identity sequence is not transactional, so it shows progress)
sub start_enqueue
{
	my $before = $node->safe_psql('shop', 'SELECT last_value FROM loyalty.outbox_message_id_seq');
	my $bg = $node->background_psql('shop', on_error_stop => 0);
	$bg->query_safe('SELECT pg_backend_pid()') =~ /(\d+)/ or die 'no pid';
	my $pid = $1;
	$bg->{stdin} .= "SELECT count(*) FROM loyalty.enqueue_due('$as_of');\n";
	$bg->{run}->pump_nb();
	ok($node->poll_query_until('shop',
		"SELECT last_value > $before + 300 FROM loyalty.outbox_message_id_seq"), 'enqueue_due is writing');
	return ($bg, $pid);
}

# 1. the enqueuing backend is SIGKILLed: the postmaster resets every session
my ($bg, $pid) = start_enqueue();
kill 'KILL', $pid;
eval { $bg->quit; };
ok($node->poll_query_until('shop', 'SELECT true'), 'server back after the crash');
is($node->safe_psql('shop', 'SELECT count(*) FROM loyalty.outbox'), '0',
	'the killed run left no row (one transaction)');

# 2. the rerun is killed too, by an immediate shutdown
($bg, $pid) = start_enqueue();
$node->stop('immediate');
eval { $bg->quit; };
$node->start;
is($node->safe_psql('shop', 'SELECT count(*) FROM loyalty.outbox'), '0',
	'nothing of the interrupted run survives the immediate shutdown');

# 3. a run that completes: exactly the reference rows
$node->safe_psql('shop', 'DROP TRIGGER slow_outbox ON loyalty.outbox');
$node->safe_psql('shop', "SELECT count(*) FROM loyalty.enqueue_due('$as_of')");
is($node->safe_psql('shop', 'SELECT count(*) FROM loyalty.outbox'), $expected_rows,
	'the rerun after recovery writes as many rows as the uninterrupted run');
ok($node->safe_psql('shop', $listing) eq $expected,
	'and exactly the same messages (key, campaign, customer, channel, recipient, status, due and expiry times, payload)');

# the hand-computed messages, in the reference run and after the crashes
is($node->safe_psql('reference', $hand_sql), $hand_expected, 'reference run: the messages worked out by hand');
is($node->safe_psql('shop', $hand_sql), $hand_expected, 'run after recovery: the messages worked out by hand');

# 4. running it again changes nothing
$node->safe_psql('shop', "SELECT count(*) FROM loyalty.enqueue_due('$as_of')");
is($node->safe_psql('shop', 'SELECT count(*) FROM loyalty.outbox'), $expected_rows, 'a further rerun adds nothing');
is($node->safe_psql('shop',
	'SELECT count(*) FROM (SELECT campaign_id, customer_id, dedupe_key FROM loyalty.outbox GROUP BY 1, 2, 3 HAVING count(*) > 1) d'),
	'0', 'no message twice');

$node->stop;
done_testing();
