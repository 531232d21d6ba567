-- The weekly digest: the shop's week in figures (JSON) and as a self-contained
-- HTML page with inline SVG charts, for the owner's mailbox. Reads only
-- aggregates; every text that comes from the shop (segment and campaign names)
-- is escaped before it reaches the page.

-- segment sizes as of a digest, so the next one can show the moves
CREATE TABLE loyalty.segment_snapshots (
    taken_at    timestamptz PRIMARY KEY,
    segments    jsonb NOT NULL
);
COMMENT ON TABLE loyalty.segment_snapshots IS 'Customers per RFM segment at each digest (segment moves between digests)';

-- text for HTML (element content and attribute values)
CREATE FUNCTION loyalty._html(s text)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT replace(replace(replace(replace(replace(coalesce(s, ''), '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
                   '"', '&quot;'), '''', '&#39;')
$$;

-- period figures used by both the JSON digest and the page
CREATE FUNCTION loyalty.digest_figures(from_at timestamptz, to_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER    -- aggregates only: the BI role may read them without the tables behind
SET search_path = pg_catalog, pg_temp
SET jit = off       -- small aggregates over indexed ranges: compiling costs a second and saves nothing
AS $$
DECLARE
    result jsonb;
BEGIN
    IF from_at IS NULL OR to_at IS NULL OR NOT isfinite(from_at) OR NOT isfinite(to_at)
       OR from_at >= to_at THEN
        RAISE EXCEPTION 'the digest needs a finite period with from_at before to_at'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'For last week: loyalty.digest_figures(now() - interval ''7 days'', now()).';
    END IF;
    IF to_at - from_at > interval '366 days' THEN
        RAISE EXCEPTION 'a digest covers at most a year'
              USING ERRCODE = 'invalid_parameter_value', HINT = 'Ask for a shorter period.';
    END IF;

    WITH period_orders AS (
        SELECT o.customer_id, o.amount - o.refunded AS net
          FROM loyalty.orders o
         WHERE o.counts AND o.ordered_at >= from_at
           AND o.ordered_at < to_at
    ), buyers AS (
        SELECT p.customer_id, sum(p.net) AS revenue, count(*) AS orders,
               (cs.first_order_at >= from_at) AS is_new
          FROM period_orders p JOIN loyalty.customer_state cs USING (customer_id)
         GROUP BY p.customer_id, cs.first_order_at
    ), by_segment AS (
        SELECT coalesce(r.segment, 'Unscored') AS segment, count(*) AS customers, sum(b.revenue) AS revenue
          FROM buyers b LEFT JOIN loyalty.customer_rfm r USING (customer_id)
         GROUP BY 1
    ), weeks AS (
        -- the eight weeks ending at to_at: buyers, returning buyers, revenue
        SELECT w.i, to_at - (w.i + 1) * interval '7 days' AS week_from,
               count(DISTINCT o.customer_id) AS buyers,
               count(DISTINCT o.customer_id) FILTER (WHERE cs.first_order_at <
                   to_at - (w.i + 1) * interval '7 days') AS returning_buyers,
               coalesce(sum(o.amount - o.refunded), 0) AS revenue
          FROM generate_series(0, 7) w(i)
          LEFT JOIN loyalty.orders o
                 ON o.counts
                AND o.ordered_at >= to_at - (w.i + 1) * interval '7 days'
                AND o.ordered_at < to_at - w.i * interval '7 days'
          LEFT JOIN loyalty.customer_state cs ON cs.customer_id = o.customer_id
         GROUP BY w.i
    ), segments_now AS (
        SELECT segment, count(*) AS customers FROM loyalty.customer_rfm GROUP BY segment
    ), last_snapshot AS (
        SELECT s.taken_at, s.segments FROM loyalty.segment_snapshots s
         WHERE s.taken_at <= to_at ORDER BY s.taken_at DESC LIMIT 1
    ), sent AS (
        SELECT m.campaign_id, count(*) AS sent
          FROM loyalty.outbox m
         WHERE m.status = 'sent' AND m.sent_at >= from_at
           AND m.sent_at < to_at
         GROUP BY m.campaign_id
    ), points AS (
        SELECT coalesce(sum(l.points) FILTER (WHERE l.kind = 'earn'), 0) AS issued,
               coalesce(-sum(l.points) FILTER (WHERE l.kind = 'redeem'), 0) AS redeemed,
               coalesce(-sum(l.points) FILTER (WHERE l.kind = 'expire'), 0) AS expired
          FROM loyalty.ledger l
         WHERE l.created_at >= from_at AND l.created_at < to_at
    )
    SELECT jsonb_build_object(
        'from', from_at, 'to', to_at,
        'orders', (SELECT count(*) FROM period_orders),
        'revenue', (SELECT coalesce(sum(net), 0) FROM period_orders),
        'customers', (SELECT count(*) FROM buyers),
        'new_customers', (SELECT count(*) FILTER (WHERE is_new) FROM buyers),
        'returning_customers', (SELECT count(*) FILTER (WHERE NOT is_new) FROM buyers),
        'repeat_rate', (SELECT round(count(*) FILTER (WHERE NOT is_new)::numeric / nullif(count(*), 0), 4)
                          FROM buyers),
        'revenue_by_segment', coalesce((SELECT jsonb_agg(jsonb_build_object('segment', segment, 'customers', customers,
                                                                            'revenue', revenue) ORDER BY revenue DESC, segment)
                                          FROM by_segment), '[]'),
        'weekly', (SELECT jsonb_agg(jsonb_build_object('week_from', week_from, 'buyers', buyers, 'returning', returning_buyers,
                                                       'repeat_rate', round(returning_buyers::numeric / nullif(buyers, 0), 4),
                                                       'revenue', revenue) ORDER BY i DESC)
                     FROM weeks),
        -- change: against the last snapshot (none: NULL); a segment absent on one side counts 0 there
        'segments', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                 'segment', g.segment, 'customers', g.customers, 'change', g.change)
                                 ORDER BY g.customers DESC, g.segment)
                                FROM (SELECT coalesce(n.segment, o.key) AS segment, coalesce(n.customers, 0) AS customers,
                                             coalesce(n.customers, 0) - coalesce(o.value::bigint, 0)
                                               + CASE WHEN (SELECT segments FROM last_snapshot) IS NULL THEN NULL ELSE 0 END AS change
                                        FROM segments_now n
                                        FULL JOIN jsonb_each_text((SELECT segments FROM last_snapshot)) o ON o.key = n.segment) g),
                             '[]'),
        'segments_compared_with', (SELECT taken_at FROM last_snapshot),
        'campaigns', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                  'campaign', p.name, 'sent', coalesce(s.sent, 0), 'sent_total', p.sent,
                                  'uplift', p.ordered_share_uplift, 'uplift_low', p.ordered_share_uplift_low,
                                  'uplift_high', p.ordered_share_uplift_high, 'verdict', p.verdict)
                                  ORDER BY p.campaign_id)
                                 FROM loyalty.campaign_performance p LEFT JOIN sent s USING (campaign_id)
                                WHERE p.messages > 0), '[]'),
        -- the system's own health now: every check not ok (loyalty.health)
        'health', (SELECT jsonb_build_object(
                              'ok', count(*) FILTER (WHERE h.status = 'ok'),
                              'warning', count(*) FILTER (WHERE h.status = 'warning'),
                              'critical', count(*) FILTER (WHERE h.status = 'critical'),
                              'problems', coalesce(jsonb_agg(jsonb_build_object('check', h."check", 'status', h.status,
                                                                                'detail', h.detail, 'hint', h.hint)
                                                             ORDER BY h.status DESC, h."check")
                                                   FILTER (WHERE h.status <> 'ok'), '[]'))
                     FROM loyalty.health h),
        'points', (SELECT jsonb_build_object('issued', pt.issued, 'redeemed', pt.redeemed, 'expired', pt.expired,
                                             'outstanding', l.outstanding_points, 'outstanding_value', l.outstanding_value)
                     FROM points pt, loyalty.liability l))
      INTO result;
    RETURN result;
END
$$;
COMMENT ON FUNCTION loyalty.digest_figures(timestamptz, timestamptz) IS
'The shop''s figures for a period: orders, revenue, new and returning customers, repeat rate, revenue by segment, eight weeks of repeat rate, segment moves since the last digest, messages and uplift per campaign, points issued, redeemed and outstanding, and the system''s health now';

-- horizontal bars: one row per label, value scaled to the largest
CREATE FUNCTION loyalty._svg_bars(labels text[], vals numeric[], unit text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH v AS (
        SELECT u.l, u.v, u.i, max(abs(u.v)) OVER () AS m
          FROM unnest(labels, vals) WITH ORDINALITY u(l, v, i)
    )
    SELECT format('<svg xmlns="http://www.w3.org/2000/svg" width="520" height="%s" role="img">',
                  8 + 24 * coalesce(max(i), 0))
        || coalesce(string_agg(format(
               '<text x="0" y="%s" font-size="12">%s</text>'
            || '<rect x="150" y="%s" width="%s" height="16" fill="#3b7dd8"/>'
            || '<text x="%s" y="%s" font-size="12">%s%s</text>',
               24 * i - 6, loyalty._html(l),
               24 * i - 18,
               round(280 * abs(v) / nullif(m, 0), 1),
               156 + coalesce(round(280 * abs(v) / nullif(m, 0), 1), 0),
               24 * i - 6, round(v, 2), loyalty._html(unit)), '' ORDER BY i), '')
        || '</svg>'
      FROM v
$$;

-- vertical bars over weeks, values 0..1 shown as percentages
CREATE FUNCTION loyalty._svg_rates(labels text[], vals numeric[])
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '<svg xmlns="http://www.w3.org/2000/svg" width="520" height="170" role="img">'
        || '<line x1="0" y1="140" x2="520" y2="140" stroke="#999"/>'
        || coalesce(string_agg(format(
               '<rect x="%s" y="%s" width="40" height="%s" fill="#2e9e6b"/>'
            || '<text x="%s" y="%s" font-size="11">%s</text>'
            || '<text x="%s" y="160" font-size="10">%s</text>',
               10 + 62 * (i - 1), 140 - round(120 * coalesce(v, 0), 1), round(120 * coalesce(v, 0), 1),
               10 + 62 * (i - 1), 135 - round(120 * coalesce(v, 0), 1),
               CASE WHEN v IS NULL THEN '-' ELSE round(100 * v) || '%' END,
               10 + 62 * (i - 1), loyalty._html(l)), '' ORDER BY i), '')
        || '</svg>'
      FROM unnest(labels, vals) WITH ORDINALITY u(l, v, i)
$$;

-- a dot per campaign at its uplift, a line across its 95% interval, and zero
CREATE FUNCTION loyalty._svg_uplift(labels text[], est numeric[], lo numeric[], hi numeric[])
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH v AS (
        SELECT u.l, u.e, u.lo, u.hi, u.i,
               least(0, min(u.lo) OVER ()) AS xmin, greatest(0, max(u.hi) OVER ()) AS xmax
          FROM unnest(labels, est, lo, hi) WITH ORDINALITY u(l, e, lo, hi, i)
         WHERE u.e IS NOT NULL AND u.lo IS NOT NULL AND u.hi IS NOT NULL
    ), s AS (
        SELECT v.*, 280 / nullif(xmax - xmin, 0) AS k FROM v
    )
    SELECT CASE WHEN count(*) = 0 THEN
               '<p>No measured uplift yet: a campaign needs a holdout group and customers whose attribution window has passed.</p>'
           ELSE format('<svg xmlns="http://www.w3.org/2000/svg" width="520" height="%s" role="img">',
                  16 + 24 * count(*))
        || coalesce(format('<line x1="%s" y1="0" x2="%s" y2="%s" stroke="#999"/>',
                           round(150 - min(xmin) * min(k), 1), round(150 - min(xmin) * min(k), 1), 16 + 24 * count(*)), '')
        || coalesce(string_agg(format(
               '<text x="0" y="%s" font-size="12">%s</text>'
            || '<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#555" stroke-width="2"/>'
            || '<circle cx="%s" cy="%s" r="4" fill="%s"/>'
            || '<text x="440" y="%s" font-size="11">%s pp</text>',
               24 * i, loyalty._html(l),
               round(150 + (lo - xmin) * k, 1), 24 * i - 4, round(150 + (hi - xmin) * k, 1), 24 * i - 4,
               round(150 + (e - xmin) * k, 1), 24 * i - 4, CASE WHEN lo > 0 THEN '#2e9e6b' WHEN hi < 0 THEN '#c0392b' ELSE '#777' END,
               24 * i, round(100 * e, 1)), '' ORDER BY i), '')
        || '</svg>' END
      FROM s
$$;

CREATE FUNCTION loyalty.report_html(from_at timestamptz, to_at timestamptz)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f jsonb := loyalty.digest_figures(from_at, to_at);
    p jsonb := f -> 'points';
    segs text;
    camps text;
    health text;
BEGIN
    SELECT '<table><tr><th>check</th><th>status</th><th>detail</th></tr>'
           || string_agg(format('<tr><td>%s</td><td>%s</td><td>%s</td></tr>', loyalty._html(e ->> 'check'),
                                loyalty._html(e ->> 'status'), loyalty._html(e ->> 'detail')), '' ORDER BY o)
           || '</table>'
      INTO health FROM jsonb_array_elements(f -> 'health' -> 'problems') WITH ORDINALITY a(e, o);
    SELECT string_agg(format('<tr><td>%s</td><td class="n">%s</td><td class="n">%s</td></tr>',
                             loyalty._html(e ->> 'segment'), e ->> 'customers',
                             coalesce(CASE WHEN (e ->> 'change')::bigint > 0 THEN '+' ELSE '' END || (e ->> 'change'), '')),
                      '' ORDER BY o)
      INTO segs FROM jsonb_array_elements(f -> 'segments') WITH ORDINALITY a(e, o);
    SELECT string_agg(format('<tr><td>%s</td><td class="n">%s</td><td class="n">%s</td><td>%s</td></tr>',
                             loyalty._html(e ->> 'campaign'), e ->> 'sent',
                             coalesce(round(100 * (e ->> 'uplift')::numeric, 1) || ' pp ['
                                      || round(100 * (e ->> 'uplift_low')::numeric, 1) || ', '
                                      || round(100 * (e ->> 'uplift_high')::numeric, 1) || ']', ''),
                             loyalty._html(e ->> 'verdict')), '' ORDER BY o)
      INTO camps FROM jsonb_array_elements(f -> 'campaigns') WITH ORDINALITY a(e, o);

    RETURN '<!DOCTYPE html>' || E'\n'
        || '<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8"/>'
        || '<title>Your shop this week</title><style>'
        || 'body{font-family:Helvetica,Arial,sans-serif;color:#222;max-width:560px;margin:auto;padding:12px}'
        || 'h1{font-size:20px}h2{font-size:16px;margin-top:24px;border-bottom:1px solid #ddd}'
        || 'table{border-collapse:collapse;width:100%}td,th{padding:3px 6px;text-align:left}'
        || '.n{text-align:right}.kpi td{font-size:15px}.kpi td.n{font-weight:bold}'
        || '</style></head><body>'
        || format('<h1>Your shop, %s to %s</h1>', to_char(from_at, 'YYYY-MM-DD'), to_char(to_at, 'YYYY-MM-DD'))
        || '<table class="kpi">'
        || format('<tr><td>Orders</td><td class="n">%s</td></tr>', f ->> 'orders')
        || format('<tr><td>Revenue</td><td class="n">%s</td></tr>', f ->> 'revenue')
        || format('<tr><td>Customers who ordered</td><td class="n">%s</td></tr>', f ->> 'customers')
        || format('<tr><td>New customers</td><td class="n">%s</td></tr>', f ->> 'new_customers')
        || format('<tr><td>Returning customers</td><td class="n">%s</td></tr>', f ->> 'returning_customers')
        || format('<tr><td>Repeat rate</td><td class="n">%s</td></tr>',
                  coalesce(round(100 * (f ->> 'repeat_rate')::numeric, 1) || '%', '-'))
        || '</table>'
        || '<h2>Revenue by segment</h2>'
        || loyalty._svg_bars(ARRAY(SELECT e ->> 'segment' FROM jsonb_array_elements(f -> 'revenue_by_segment') WITH ORDINALITY a(e, o) ORDER BY o),
                             ARRAY(SELECT (e ->> 'revenue')::numeric FROM jsonb_array_elements(f -> 'revenue_by_segment') WITH ORDINALITY a(e, o) ORDER BY o),
                             '')
        || '<h2>Repeat rate, last eight weeks</h2>'
        || loyalty._svg_rates(ARRAY(SELECT to_char((e ->> 'week_from')::timestamptz, 'MM-DD') FROM jsonb_array_elements(f -> 'weekly') WITH ORDINALITY a(e, o) ORDER BY o),
                              ARRAY(SELECT (e ->> 'repeat_rate')::numeric FROM jsonb_array_elements(f -> 'weekly') WITH ORDINALITY a(e, o) ORDER BY o))
        || '<h2>Segments</h2><table><tr><th>segment</th><th class="n">customers</th><th class="n">change</th></tr>'
        || coalesce(segs, '') || '</table>'
        || '<h2>Campaigns</h2><table><tr><th>campaign</th><th class="n">sent</th><th class="n">uplift [95%]</th><th>verdict</th></tr>'
        || coalesce(camps, '') || '</table>'
        || loyalty._svg_uplift(ARRAY(SELECT e ->> 'campaign' FROM jsonb_array_elements(f -> 'campaigns') WITH ORDINALITY a(e, o) ORDER BY o),
                               ARRAY(SELECT (e ->> 'uplift')::numeric FROM jsonb_array_elements(f -> 'campaigns') WITH ORDINALITY a(e, o) ORDER BY o),
                               ARRAY(SELECT (e ->> 'uplift_low')::numeric FROM jsonb_array_elements(f -> 'campaigns') WITH ORDINALITY a(e, o) ORDER BY o),
                               ARRAY(SELECT (e ->> 'uplift_high')::numeric FROM jsonb_array_elements(f -> 'campaigns') WITH ORDINALITY a(e, o) ORDER BY o))
        || '<h2>Points</h2><table>'
        || format('<tr><td>Issued</td><td class="n">%s</td></tr>', p ->> 'issued')
        || format('<tr><td>Redeemed</td><td class="n">%s</td></tr>', p ->> 'redeemed')
        || format('<tr><td>Expired</td><td class="n">%s</td></tr>', p ->> 'expired')
        || format('<tr><td>Outstanding (value)</td><td class="n">%s (%s)</td></tr>',
                  coalesce(p ->> 'outstanding', '0'), coalesce(p ->> 'outstanding_value', '0'))
        || '</table>'
        || '<h2>Health of the system</h2>'
        || format('<p>%s checks ok, %s warning, %s critical.</p>', f -> 'health' ->> 'ok',
                  f -> 'health' ->> 'warning', f -> 'health' ->> 'critical')
        || coalesce(health, '')
        || '</body></html>' || E'\n';
END
$$;
COMMENT ON FUNCTION loyalty.report_html(timestamptz, timestamptz) IS
'The digest of a period as a self-contained HTML page (inline CSS, inline SVG charts: revenue by segment, weekly repeat rate, campaign uplift with intervals)';

-- remember segment sizes for the next digest's moves
CREATE FUNCTION loyalty.snapshot_segments(as_of timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO loyalty.segment_snapshots (taken_at, segments)
    SELECT as_of, coalesce(jsonb_object_agg(segment, customers), '{}')
      FROM (SELECT segment, count(*) AS customers FROM loyalty.customer_rfm GROUP BY segment) s
    ON CONFLICT (taken_at) DO UPDATE SET segments = EXCLUDED.segments
    RETURNING segments
$$;
COMMENT ON FUNCTION loyalty.snapshot_segments(timestamptz) IS
'Record customers per segment now; the next digest shows the change since';

-- The weekly digest into the outbox for owner_recipient (configure_health):
-- the week (Monday to Monday, shop time: journey_settings.default_time_zone)
-- before as_of, once per week (dedupe key), from digest_hour on Monday, so
-- check_health() (every few minutes) sends it on Monday morning and catches up
-- after downtime later in the week.
CREATE FUNCTION loyalty.send_digest(as_of timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s loyalty.health_settings;
    zone text := coalesce((SELECT j.default_time_zone FROM loyalty.journey_settings j), 'UTC');
    week_end timestamptz;
    key text;
    figures jsonb;
    id bigint;
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be a finite time' USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it for now().';
    END IF;
    SELECT * INTO s FROM loyalty.health_settings;
    IF s.owner_recipient IS NULL THEN
        RETURN NULL;    -- no owner to write to (configure_health(owner_recipient => ...))
    END IF;
    -- Monday 00:00 of as_of's week, shop time
    week_end := date_trunc('week', as_of AT TIME ZONE zone) AT TIME ZONE zone;
    key := 'loyalty:digest:' || to_char(week_end AT TIME ZONE zone, 'YYYY-MM-DD');
    IF as_of < (week_end AT TIME ZONE zone + make_interval(hours => s.digest_hour)) AT TIME ZONE zone
       OR EXISTS (SELECT 1 FROM loyalty.outbox o WHERE o.dedupe_key = key) THEN
        RETURN NULL;    -- too early on Monday, or this week's digest is written
    END IF;
    figures := loyalty.digest_figures((week_end AT TIME ZONE zone - interval '7 days') AT TIME ZONE zone, week_end);
    INSERT INTO loyalty.outbox (dedupe_key, customer_id, channel, recipient, template, payload, due_at)
    VALUES (key, 'loyalty:owner', s.owner_channel, s.owner_recipient, 'loyalty_weekly_digest',
            jsonb_build_object('figures', figures,
                               'html', loyalty.report_html((figures ->> 'from')::timestamptz, week_end)),
            as_of)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING message_id INTO id;
    IF id IS NOT NULL THEN
        PERFORM loyalty.snapshot_segments(week_end);
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION loyalty.send_digest(timestamptz) IS
'Write last week''s digest (figures and HTML page, template loyalty_weekly_digest) into the outbox for configure_health''s owner_recipient, once per week, from digest_hour on Monday shop time (check_health() calls it); returns the message id, or NULL when not due, already written or no owner is set';

-- aggregates only, no personal data: BI tools may read the digest too
GRANT EXECUTE ON FUNCTION loyalty.digest_figures(timestamptz, timestamptz),
                          loyalty.report_html(timestamptz, timestamptz) TO loyalty_reader;
SELECT pg_catalog.pg_extension_config_dump('loyalty.segment_snapshots', '');
