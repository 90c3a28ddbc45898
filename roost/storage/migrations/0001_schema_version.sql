-- The schema version table itself is created by the migrator; this first
-- migration holds server-wide settings.
CREATE TABLE server_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
