-- Statistics for the small settings tables: unanalysed, the planner takes
-- each for hundreds of rows, and a view over a few of them crosses the JIT
-- threshold on a tiny shop (hundreds of milliseconds compiling a plan that
-- runs in one). Analysed once, their estimates follow their size.
ANALYZE loyalty.rfm_config, loyalty.segment_rules, loyalty.model_settings, loyalty.model_fits, loyalty.model_choice,
        loyalty.rewards_settings, loyalty.tiers, loyalty.earn_rules, loyalty.outbox_settings, loyalty.journey_settings,
        loyalty.journey_report_settings, loyalty.campaigns, loyalty.journey_runs;
