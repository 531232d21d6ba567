-- 0.1 -> 0.2: tier overrides (issue 14): the tier in force may be an
-- override's (staff, or service recovery), kept beside the tier spend earns;
-- tier_history records overrides starting and ending.
ALTER TABLE loyalty.customer_tiers ADD COLUMN earned_tier text, ADD COLUMN override_id bigint, ADD COLUMN override_until timestamptz;
COMMENT ON COLUMN loyalty.customer_tiers.tier IS 'the tier in force: the one spend earns, or a higher one given by a tier override (loyalty.tier_overrides) until it ends';
COMMENT ON COLUMN loyalty.customer_tiers.earned_tier IS 'while an override is in force (override_id set): the tier spend earns, which returns when it ends';
COMMENT ON COLUMN loyalty.customer_tiers.override_id IS 'the tier override in force (loyalty.tier_overrides); NULL: none';
COMMENT ON COLUMN loyalty.customer_tiers.override_until IS 'when the override in force ends';
ALTER TABLE loyalty.tier_history ADD COLUMN override_id bigint;
COMMENT ON TABLE loyalty.tier_history IS 'Every tier change (assigned: the first evaluation of a customer; upgrade; downgrade after the grace period; tier removed; override: a tier override starts; override ended: it ended and the earned tier returns)';
COMMENT ON COLUMN loyalty.tier_history.override_id IS 'reason override / override ended: the tier override (loyalty.tier_overrides)';
