-- Profile fields beyond displayname and avatar_url (m.tz and custom keys), as one
-- JSON object per user: the spec caps a whole profile at 64 KiB.
ALTER TABLE profiles ADD COLUMN fields JSONB NOT NULL DEFAULT '{}'::jsonb;
