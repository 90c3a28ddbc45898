-- How far the device list sender has read the device_lists stream: the
-- m.device_list_update and m.signing_key_update EDUs of every local change up
-- to here are in the federation sender's durable queue. A restart resumes
-- from here (an EDU queued twice is harmless: receivers skip a stream_id they
-- have applied).
CREATE TABLE device_lists_sent_position (
    lock CHAR(1) PRIMARY KEY DEFAULT 'X' CHECK (lock = 'X'),
    stream_position BIGINT NOT NULL
);
