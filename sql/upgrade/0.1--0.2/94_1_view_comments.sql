-- Every view column has a COMMENT (BI users read them): the columns of the
-- views 0.1 installed (and of 0.2's points_history and failing_campaigns) that
-- had none. Views created by linked install fragments (78_operations,
-- 82_privacy, 85_health) get theirs there.

-- sql/install/20_intake.sql
COMMENT ON COLUMN loyalty.rejected_summary.source_id IS 'the attached table (loyalty.sources or loyalty.customer_sources; they share ids)';
COMMENT ON COLUMN loyalty.rejected_summary.source IS 'schema.table of the attached table';
COMMENT ON COLUMN loyalty.rejected_summary.reason IS 'why loyalty could not use the rows (e.g. customer is null, amount is negative)';
COMMENT ON COLUMN loyalty.rejected_summary.first_rejected_at IS 'when the oldest of these rows was rejected';
COMMENT ON COLUMN loyalty.rejected_summary.last_rejected_at IS 'when the newest of these rows was rejected';

-- sql/install/30_rfm.sql
COMMENT ON COLUMN loyalty.segment_summary.segment IS 'named segment from loyalty.segment_rules (Other when no rule matches)';
COMMENT ON COLUMN loyalty.segment_summary.customers IS 'scored customers in the segment';

-- sql/install/50_models.sql
COMMENT ON COLUMN loyalty.model_inputs.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.current_fits.bgnbd_fit_id IS 'the loyalty.model_fits row of the newest fitted BG/NBD (NULL: none)';
COMMENT ON COLUMN loyalty.current_fits.r IS 'BG/NBD r: shape of the Gamma distribution of purchase rates (Fader, Hardie and Lee 2005)';
COMMENT ON COLUMN loyalty.current_fits.alpha IS 'BG/NBD alpha: scale of the Gamma distribution of purchase rates, in days';
COMMENT ON COLUMN loyalty.current_fits.a IS 'BG/NBD a: first shape of the Beta distribution of dropout probabilities';
COMMENT ON COLUMN loyalty.current_fits.b IS 'BG/NBD b: second shape of the Beta distribution of dropout probabilities';
COMMENT ON COLUMN loyalty.current_fits.gamma_gamma_fit_id IS 'the loyalty.model_fits row of the newest fitted Gamma-Gamma (NULL: none)';
COMMENT ON COLUMN loyalty.current_fits.p IS 'Gamma-Gamma p: shape of the Gamma distribution of a customer''s order values (Fader and Hardie 2013)';
COMMENT ON COLUMN loyalty.current_fits.q IS 'Gamma-Gamma q: shape of the Gamma distribution of the order-value scale across customers';
COMMENT ON COLUMN loyalty.current_fits.gamma IS 'Gamma-Gamma gamma: scale of the Gamma distribution of the order-value scale across customers';
COMMENT ON COLUMN loyalty.current_model.r IS 'the model''s r (shape of the purchase-rate distribution); NULL for the heuristic';
COMMENT ON COLUMN loyalty.current_model.alpha IS 'the model''s alpha (scale of the purchase-rate distribution, in days); NULL for the heuristic';
COMMENT ON COLUMN loyalty.current_model.heuristic_fit_id IS 'the loyalty.model_fits row of the newest heuristic fit (its shop_gap); NULL before any fit';

-- sql/install/62_rewards.sql
COMMENT ON COLUMN loyalty.balances.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.balances.updated_at IS 'when the customer''s points last changed';
COMMENT ON COLUMN loyalty.liability.available_points IS 'points customers can spend now (customers with a positive balance)';
COMMENT ON COLUMN loyalty.liability.pending_points IS 'points earned but not yet available';
COMMENT ON COLUMN loyalty.liability.point_value IS 'value of one point in the shop''s currency (rewards_settings.point_value)';
COMMENT ON COLUMN loyalty.liability.customers_with_points IS 'customers with available or pending points';
COMMENT ON COLUMN loyalty.points_history.entry_id IS 'the ledger entry, in the order entries were written';
COMMENT ON COLUMN loyalty.points_history.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.points_history.kind IS 'earn, redeem, expire, reverse (points of a refunded order taken back) or adjust';
COMMENT ON COLUMN loyalty.points_history.points IS 'signed: earn > 0; redeem, expire, reverse <= 0; adjust either';
COMMENT ON COLUMN loyalty.points_history.order_ref IS 'the order the points are for (order points and their reversals); NULL otherwise';
COMMENT ON COLUMN loyalty.points_history.lot_id IS 'for expire: the lot expired';
COMMENT ON COLUMN loyalty.points_history.available_at IS 'for earn: when the points become spendable';
COMMENT ON COLUMN loyalty.points_history.expires_at IS 'for earn: when the points expire (NULL: never)';
COMMENT ON COLUMN loyalty.points_history.created_at IS 'when the entry was written';

-- sql/install/65_outbox.sql
COMMENT ON COLUMN loyalty.outbox_summary.status IS 'the messages'' outbox status (claimed: pending under a sender''s lease)';
COMMENT ON COLUMN loyalty.outbox_summary.channel IS 'email, sms, whatsapp, push or the shop''s own channel';
COMMENT ON COLUMN loyalty.outbox_summary.messages IS 'messages with this status and channel';
COMMENT ON COLUMN loyalty.dead_letters.message_id IS 'the outbox message (loyalty.requeue_dead takes these ids)';
COMMENT ON COLUMN loyalty.dead_letters.campaign_id IS 'the campaign that decided the message (NULL: loyalty''s own messages)';
COMMENT ON COLUMN loyalty.dead_letters.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.dead_letters.channel IS 'the channel the message was for';
COMMENT ON COLUMN loyalty.dead_letters.recipient IS 'email address or phone number the message was for';
COMMENT ON COLUMN loyalty.dead_letters.template IS 'the template the sender was to render';
COMMENT ON COLUMN loyalty.dead_letters.last_due_at IS 'when the message was last due (its last retry)';
COMMENT ON COLUMN loyalty.dead_letters.created_at IS 'when the message was written to the outbox';
COMMENT ON COLUMN loyalty.dead_letters.payload IS 'what the template needs and why the message was chosen';

-- sql/install/70_journeys.sql
COMMENT ON COLUMN loyalty.journey_context.customer_id IS 'the shop''s customer key, as text (customers with orders)';
COMMENT ON COLUMN loyalty.journey_context.name IS 'the customer''s name (loyalty.profiles)';
COMMENT ON COLUMN loyalty.journey_context.email IS 'the customer''s email address';
COMMENT ON COLUMN loyalty.journey_context.phone IS 'the customer''s phone number';
COMMENT ON COLUMN loyalty.journey_context.birthday IS 'the customer''s birthday';
COMMENT ON COLUMN loyalty.journey_context.time_zone IS 'the customer''s IANA time zone (NULL: journey_settings.default_time_zone)';
COMMENT ON COLUMN loyalty.journey_context.orders IS 'counted orders (status in the counted set, not fully refunded)';
COMMENT ON COLUMN loyalty.journey_context.first_order_at IS 'time of the first counted order';
COMMENT ON COLUMN loyalty.journey_context.last_order_at IS 'time of the last counted order';
COMMENT ON COLUMN loyalty.journey_context.days_since_last_order IS 'UTC calendar days from the last counted order to now (loyalty._utc_days)';
COMMENT ON COLUMN loyalty.journey_context.net_spend IS 'spend on counted orders less refunds';
COMMENT ON COLUMN loyalty.journey_context.avg_spend IS 'net spend per counted order';
COMMENT ON COLUMN loyalty.journey_context.r_score IS 'RFM recency score, 1 (longest ago) to bins (most recent)';
COMMENT ON COLUMN loyalty.journey_context.f_score IS 'RFM frequency score, 1 (fewest orders) to bins';
COMMENT ON COLUMN loyalty.journey_context.m_score IS 'RFM monetary score, 1 (lowest spend) to bins';
COMMENT ON COLUMN loyalty.journey_context.segment IS 'named RFM segment (loyalty.segment_rules)';
COMMENT ON COLUMN loyalty.journey_context.points IS 'the customer''s point balance (0: no account)';
COMMENT ON COLUMN loyalty.journey_context.tier IS 'the customer''s tier (NULL: none)';

-- sql/install/71_journeys_due.sql
COMMENT ON COLUMN loyalty.due_messages.campaign_id IS 'the campaign (loyalty.campaigns)';
COMMENT ON COLUMN loyalty.due_messages.campaign IS 'the campaign''s name';
COMMENT ON COLUMN loyalty.due_messages.kind IS 'the campaign''s kind (welcome, post_purchase, win_back, ...)';
COMMENT ON COLUMN loyalty.due_messages.channel IS 'the channel the message goes out on';
COMMENT ON COLUMN loyalty.due_messages.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.due_messages.dedupe_key IS 'campaign:customer:occasion, the outbox''s unique key';
COMMENT ON COLUMN loyalty.due_messages.expires_at IS 'after this the message is not sent (recorded as expired)';
COMMENT ON COLUMN loyalty.due_messages.template IS 'the template the sender renders';
COMMENT ON COLUMN loyalty.due_messages.priority IS 'the campaign''s priority (lower wins under the frequency cap)';
COMMENT ON COLUMN loyalty.contact_quality.channel IS 'email, sms or whatsapp';
COMMENT ON COLUMN loyalty.contact_quality.customers IS 'customers with orders';
COMMENT ON COLUMN loyalty.contact_quality.no_profile IS 'customers with orders but no profile (no contact data at all)';
COMMENT ON COLUMN loyalty.contact_quality.reachable IS 'customers with a usable recipient on this channel';

-- sql/install/73_journeys_conditions.sql
COMMENT ON COLUMN loyalty.failing_campaigns.campaign_id IS 'the campaign (loyalty.campaigns)';
COMMENT ON COLUMN loyalty.failing_campaigns.campaign IS 'the campaign''s name';
COMMENT ON COLUMN loyalty.failing_campaigns.active IS 'whether the campaign is switched on (always true here)';
COMMENT ON COLUMN loyalty.failing_campaigns.first_failed_at IS 'when the condition first failed';
COMMENT ON COLUMN loyalty.failing_campaigns.last_failed_at IS 'when the condition last failed (in the last loyalty.enqueue_due() run)';
COMMENT ON COLUMN loyalty.failing_campaigns.failures IS 'runs in which the condition failed, in all';
COMMENT ON COLUMN loyalty.failing_campaigns.sqlstate IS 'the error''s SQLSTATE, e.g. 22012 division by zero';
COMMENT ON COLUMN loyalty.failing_campaigns.message IS 'the error message';
COMMENT ON COLUMN loyalty.failing_campaigns.condition IS 'the campaign''s condition as it is now';
