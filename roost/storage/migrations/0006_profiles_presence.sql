-- Profiles of local users, and the indexes behind the user directory search.
--
-- Presence is not stored: it lives in memory in client_api/presence.py (a
-- restart begins with everyone offline, which is what presence says anyway).

-- A row appears the first time a user sets a field; a user without one has
-- an empty profile.
CREATE TABLE profiles (
    user_id TEXT PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    displayname TEXT,
    avatar_url TEXT
);

-- The user directory matches a search term against the localpart and the
-- display name as substrings. With pg_trgm those are trigram (GIN) index
-- scans. pg_trgm is a trusted extension in every supported PostgreSQL, but
-- the embedded server (pgserver) does not ship it: then prefix indexes are
-- made instead, and a substring match scans. The expressions must stay
-- identical to the ones in roost/storage/profiles.py for the planner to use
-- them.
DO $$
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN undefined_file OR insufficient_privilege OR feature_not_supported THEN
        RAISE NOTICE 'pg_trgm unavailable: user directory substring search will scan';
    END;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX users_localpart_trgm ON users
            USING gin (lower(split_part(substr(user_id, 2), ':', 1)) gin_trgm_ops);
        CREATE INDEX profiles_displayname_trgm ON profiles
            USING gin (lower(displayname) gin_trgm_ops);
    ELSE
        CREATE INDEX users_localpart_prefix ON users
            (lower(split_part(substr(user_id, 2), ':', 1)) text_pattern_ops);
        CREATE INDEX profiles_displayname_prefix ON profiles
            (lower(displayname) text_pattern_ops);
    END IF;
END
$$;
