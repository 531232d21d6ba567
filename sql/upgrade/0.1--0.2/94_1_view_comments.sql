-- Every view column has a COMMENT (BI users read them): the columns of the
-- views 0.1 installed (and of 0.2's points_history and failing_campaigns) that
-- had none; and those of the views of linked install fragments (78_operations,
-- 82_privacy, 85_health), which get them there too.

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
COMMENT ON COLUMN loyalty.journey_context.last_order_at IS 'time of the last counted order';COMMENT ON COLUMN loyalty.journey_context.days_since_last_order IS 'whole UTC days from the last counted order to now (loyalty._utc_days)';
COMMENT ON COLUMN loyalty.journey_context.net_spend IS 'spend on counted orders less refunds';
COMMENT ON COLUMN loyalty.journey_context.avg_spend IS 'net spend per counted order';
COMMENT ON COLUMN loyalty.journey_context.r_score IS 'RFM recency score, 1 (longest ago) to bins (most recent)';
COMMENT ON COLUMN loyalty.journey_context.f_score IS 'RFM frequency score, 1 (fewest orders) to bins';
COMMENT ON COLUMN loyalty.journey_context.m_score IS 'RFM monetary score, 1 (lowest spend) to bins';
COMMENT ON COLUMN loyalty.journey_context.segment IS 'named RFM segment (loyalty.segment_rules)';COMMENT ON COLUMN loyalty.journey_context.points IS 'points the customer can spend now (available, less any debt; as loyalty.balance().available)';
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

-- views of linked install fragments (78_operations, 82_privacy, 85_health):
-- their comments again, in case a later fragment created the view anew

-- sql/install/78_operations.sql
COMMENT ON COLUMN loyalty.order_stages.order_ref IS 'the order (loyalty.orders)';
COMMENT ON COLUMN loyalty.order_stages.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.order_stages.ordered_at IS 'when the order was placed';
COMMENT ON COLUMN loyalty.order_stages.counted IS 'the order counts as a purchase (status in the counted set, row still in the shop)';
COMMENT ON COLUMN loyalty.order_stages.paid_at IS 'when the order was paid (NULL: not recorded)';
COMMENT ON COLUMN loyalty.order_stages.promise_revisions IS 'delivery promises recorded for the order (0: none)';
COMMENT ON COLUMN loyalty.order_stages.last_event_at IS 'time of the order''s latest shipment event';
COMMENT ON COLUMN loyalty.order_stages.last_status IS 'status of the order''s latest shipment event';
COMMENT ON COLUMN loyalty.order_stages.return_requested_at IS 'when the customer asked to return the order';
COMMENT ON COLUMN loyalty.order_stages.return_received_at IS 'when the shop received the return';
COMMENT ON COLUMN loyalty.order_stages.refunded_at IS 'when the money went back (the return''s refund time, else the first refund recorded)';
COMMENT ON COLUMN loyalty.order_stages.dispatched_at IS 'effective: the dispatch time, or the delivery time if earlier or dispatch missing';
COMMENT ON COLUMN loyalty.order_stages.delivered_at IS 'effective: the delivery time, or the carrier''s first delivered event if earlier';
COMMENT ON COLUMN loyalty.order_stages.dispatch_due IS 'dispatch deadline (the order''s dispatch_by, else the dispatch_within rule); as of the last scan';
COMMENT ON COLUMN loyalty.order_stages.delivery_due IS 'delivery deadline (the first promise, else the deliver_within rule); as of the last scan';
COMMENT ON COLUMN loyalty.order_stages.first_promise IS 'the promise made first (a date promise: the end of that day in the shop''s zone)';
COMMENT ON COLUMN loyalty.open_issues.issue_id IS 'the issue (loyalty.order_issues)';
COMMENT ON COLUMN loyalty.open_issues.order_ref IS 'the order the issue is about';
COMMENT ON COLUMN loyalty.open_issues.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.open_issues.kind IS 'late_dispatch, late_delivery, stalled_parcel, delivery_failed, slow_refund, payment_pending';
COMMENT ON COLUMN loyalty.open_issues.opened_at IS 'when the SLA was breached (the deadline, or the failure event)';
COMMENT ON COLUMN loyalty.open_issues.customer_orders IS 'the customer''s counted orders';
COMMENT ON COLUMN loyalty.open_issues.notified_at IS 'when the customer was told (loyalty.issue_notified); NULL: not yet';
COMMENT ON COLUMN loyalty.open_issues.detail IS 'the deadline and what set it, the carrier event of a failure';
COMMENT ON COLUMN loyalty.open_issues.age IS 'time since the SLA was breached';
COMMENT ON COLUMN loyalty.open_issues.customer_value IS 'the customer''s net spend to date (customer_state)';
COMMENT ON COLUMN loyalty.open_issues.segment IS 'the customer''s RFM segment';
COMMENT ON COLUMN loyalty.open_issues.order_amount IS 'the order''s amount less refunds';
COMMENT ON COLUMN loyalty.sla_summary.week IS 'Monday of the week the orders were placed, in the shop''s time zone';
COMMENT ON COLUMN loyalty.sla_summary.orders IS 'counted orders placed that week';
COMMENT ON COLUMN loyalty.sla_summary.dispatched IS 'of these, orders dispatched';
COMMENT ON COLUMN loyalty.sla_summary.delivered IS 'of these, orders delivered';
COMMENT ON COLUMN loyalty.sla_summary.dispatch_on_time_rate IS 'dispatched by the deadline, of the orders dispatched or past their deadline';
COMMENT ON COLUMN loyalty.sla_summary.delivery_on_time_rate IS 'delivered by the deadline (first promise or deliver_within), of the orders delivered or past it';
COMMENT ON COLUMN loyalty.sla_summary.median_hours_to_pay IS 'median hours from order to payment';
COMMENT ON COLUMN loyalty.sla_summary.median_hours_to_dispatch IS 'median hours from payment (or order) to effective dispatch';
COMMENT ON COLUMN loyalty.sla_summary.median_hours_to_deliver IS 'median hours from effective dispatch to delivery';
COMMENT ON COLUMN loyalty.sla_summary.issues IS 'issues of these orders opened so far';
COMMENT ON COLUMN loyalty.experience_impact.repeat_rate IS 'repeat_orders / orders';
COMMENT ON COLUMN loyalty.experience_impact.wismo_contacts IS 'support contacts with reason wismo from ordering to two days after delivery';
COMMENT ON COLUMN loyalty.experience_impact.experience IS 'on_time; late (delivered after its deadline, or any issue before delivery); late_notified / late_not_notified: late, split by whether an issue was notified';
COMMENT ON COLUMN loyalty.experience_impact.orders IS 'delivered counted orders with a deadline, delivered at least impact_window ago';
COMMENT ON COLUMN loyalty.experience_impact.repeat_orders IS 'of these, orders followed by another counted order of the customer within impact_window of delivery';
COMMENT ON COLUMN loyalty.experience_impact.repeat_rate_low IS '95% Wilson score interval, lower end';
COMMENT ON COLUMN loyalty.experience_impact.repeat_rate_high IS '95% Wilson score interval, upper end';
COMMENT ON COLUMN loyalty.experience_impact.wismo_per_100_orders IS 'support contacts with reason wismo from ordering to two days after delivery, per 100 orders';

-- sql/install/82_privacy.sql
COMMENT ON COLUMN loyalty.customer_360.customer_id IS 'the shop''s customer key, as text (customers with a profile or orders)';
COMMENT ON COLUMN loyalty.customer_360.name IS 'the customer''s name (loyalty.profiles)';
COMMENT ON COLUMN loyalty.customer_360.email IS 'the customer''s email address';
COMMENT ON COLUMN loyalty.customer_360.phone IS 'the customer''s phone number';
COMMENT ON COLUMN loyalty.customer_360.birthday IS 'the customer''s birthday';
COMMENT ON COLUMN loyalty.customer_360.time_zone IS 'the customer''s IANA time zone (NULL: journey_settings.default_time_zone)';
COMMENT ON COLUMN loyalty.customer_360.orders IS 'counted orders (NULL: none)';
COMMENT ON COLUMN loyalty.customer_360.first_order_at IS 'time of the first counted order';
COMMENT ON COLUMN loyalty.customer_360.last_order_at IS 'time of the last counted order';
COMMENT ON COLUMN loyalty.customer_360.net_spend IS 'spend on counted orders less refunds';
COMMENT ON COLUMN loyalty.customer_360.avg_spend IS 'net spend per counted order';
COMMENT ON COLUMN loyalty.customer_360.r_score IS 'RFM recency score, 1 (longest ago) to bins (most recent)';
COMMENT ON COLUMN loyalty.customer_360.f_score IS 'RFM frequency score, 1 (fewest orders) to bins';
COMMENT ON COLUMN loyalty.customer_360.m_score IS 'RFM monetary score, 1 (lowest spend) to bins';
COMMENT ON COLUMN loyalty.customer_360.segment IS 'named RFM segment (loyalty.segment_rules)';COMMENT ON COLUMN loyalty.customer_360.points IS 'points the customer can spend now (less debt), as loyalty.balances.available';
COMMENT ON COLUMN loyalty.customer_360.points_debt IS 'points the customer owes after refunds of orders whose points were spent';
COMMENT ON COLUMN loyalty.customer_360.tier IS 'the customer''s tier (NULL: none)';
COMMENT ON COLUMN loyalty.customer_360.consents IS 'current consent per channel: {channel: {granted, source, changed_at}}';
COMMENT ON COLUMN loyalty.customer_360.recent_messages IS 'the last 10 messages (campaign, channel, status, created_at, sent_at), newest first';
COMMENT ON COLUMN loyalty.due_decisions.campaign_id IS 'the campaign (loyalty.campaigns)';
COMMENT ON COLUMN loyalty.due_decisions.campaign IS 'the campaign''s name';
COMMENT ON COLUMN loyalty.due_decisions.kind IS 'the campaign''s kind (welcome, post_purchase, win_back, ...)';
COMMENT ON COLUMN loyalty.due_decisions.channel IS 'the channel the message would go out on';
COMMENT ON COLUMN loyalty.due_decisions.customer_id IS 'the shop''s customer key, as text';
COMMENT ON COLUMN loyalty.due_decisions.occasion IS 'the occasion key (first, order:<ref>, birthday:<year>, ...)';
COMMENT ON COLUMN loyalty.due_decisions.occasion_at IS 'when the occasion became due';
COMMENT ON COLUMN loyalty.due_decisions.decision IS 'send, quiet_hours, held_out, expired, capped, cooldown, no_consent, no_contact, superseded, ops_hold (as loyalty.due_messages)';
COMMENT ON COLUMN loyalty.due_decisions.reason IS 'why, in words';
COMMENT ON COLUMN loyalty.due_decisions.due_at IS 'when the message may go out (after quiet hours); NULL when it will not be sent';
COMMENT ON COLUMN loyalty.due_decisions.expires_at IS 'after this the message is not sent (recorded as expired)';
COMMENT ON COLUMN loyalty.due_decisions.template IS 'the template the sender would render';
COMMENT ON COLUMN loyalty.due_decisions.priority IS 'the campaign''s priority (lower wins under the frequency cap)';

-- sql/install/85_health.sql
COMMENT ON COLUMN loyalty.health."check" IS 'the check''s name, e.g. jobs, apply_backlog, outbox_waiting, models, rejected_rows';
COMMENT ON COLUMN loyalty.health.status IS 'ok, warning or critical';
COMMENT ON COLUMN loyalty.health.detail IS 'the measured value and the threshold, in words';
COMMENT ON COLUMN loyalty.health.since IS 'when the check entered this status (as recorded by loyalty.check_health(); now if it has just changed)';
COMMENT ON COLUMN loyalty.health.hint IS 'what to do about it';
