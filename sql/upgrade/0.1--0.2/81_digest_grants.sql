-- what 90_grants.sql gives every object of a fresh install, for the digest's
REVOKE ALL ON FUNCTION loyalty._html(text), loyalty.digest_figures(timestamptz, timestamptz),
                       loyalty._svg_bars(text[], numeric[], text), loyalty._svg_rates(text[], numeric[]),
                       loyalty._svg_uplift(text[], numeric[], numeric[], numeric[]),
                       loyalty.report_html(timestamptz, timestamptz), loyalty.snapshot_segments(timestamptz),
                       loyalty.send_digest(timestamptz)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loyalty._html(text), loyalty.digest_figures(timestamptz, timestamptz),
                          loyalty._svg_bars(text[], numeric[], text), loyalty._svg_rates(text[], numeric[]),
                          loyalty._svg_uplift(text[], numeric[], numeric[], numeric[]),
                          loyalty.report_html(timestamptz, timestamptz), loyalty.snapshot_segments(timestamptz),
                          loyalty.send_digest(timestamptz)
   TO loyalty_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE loyalty.segment_snapshots TO loyalty_admin;
