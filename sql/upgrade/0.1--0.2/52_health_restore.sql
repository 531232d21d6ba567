-- Issue 15: restores replace the health settings as they replace every other
-- settings table (90_grants.sql lists them for a fresh install).
CREATE TRIGGER restore_replaces BEFORE INSERT ON loyalty.health_settings
    FOR EACH STATEMENT EXECUTE FUNCTION loyalty._restore_replaces();
