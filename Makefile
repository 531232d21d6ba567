# loyalty: PGXS build
EXTENSION = loyalty
MODULE_big = loyalty
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)

# The current version's install script is assembled from one fragment per
# component (sql/install/), and the upgrade to it from the last release from
# one fragment per change (sql/upgrade/). Released scripts (sql/loyalty--A.sql,
# sql/loyalty--A--B.sql) are committed files and never edited.
PREV_VERSION = 0.1
INSTALL_FRAGMENTS = $(sort $(wildcard sql/install/*.sql))
UPGRADE_FRAGMENTS = $(sort $(wildcard sql/upgrade/$(PREV_VERSION)--$(EXTVERSION)/*.sql))
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql sql/$(EXTENSION)--$(PREV_VERSION)--$(EXTVERSION).sql
DATA = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*.sql))

PG_CPPFLAGS = -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
SHLIB_LINK = -lm

REGRESS = upgrade_from_0_1 upgrade_capture view_comments shared_rules intake track_orders track_fulfilment security_capture rfm models btyd btyd_cdnow btyd_recovery rewards outbox schedule journeys journeys_kinds journeys_policy journeys_report journeys_context journeys_incremental digest security operations health btyd_models decisions ops_hold service_notices tier_overrides settings_analyze lapse_cache refresh_incremental store_scores attack_capture
REGRESS_OPTS = --inputdir=. --temp-config=./test/regress.conf --temp-instance=./tmp_check --load-extension=pg_cron --load-extension=loyalty

ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=./test --temp-config=./test/regress.conf --temp-instance=./tmp_check_iso --load-extension=loyalty

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_check tmp_check_iso output_iso results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(INSTALL_FRAGMENTS)
	cat $^ > $@

# A line "-- @function loyalty.NAME" in an upgrade fragment stands for the
# function's current definition in sql/install/ (sql/upgrade/build.pl).
sql/$(EXTENSION)--$(PREV_VERSION)--$(EXTVERSION).sql: sql/upgrade/build.pl $(INSTALL_FRAGMENTS) $(UPGRADE_FRAGMENTS)
	perl sql/upgrade/build.pl $(INSTALL_FRAGMENTS) -- $(UPGRADE_FRAGMENTS) > $@.tmp
	mv $@.tmp $@

# The three suites separately (test/run_tests.sh runs each and counts).
.PHONY: installcheck-regress installcheck-isolation installcheck-tap
installcheck-regress:
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)
installcheck-isolation:
	$(pg_isolation_regress_installcheck) $(ISOLATION_OPTS) $(ISOLATION)
installcheck-tap:
	$(prove_installcheck)
