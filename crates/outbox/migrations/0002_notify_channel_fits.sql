-- A NOTIFY channel is at most 63 bytes: with a schema name longer than 46 characters,
-- 'orderflow_outbox:' || schema did not fit and every enqueue failed ("channel name too long").
-- The channel is now cut to 63 bytes; the relay listens on the same cut name
-- (`Outbox::channel`). Two schemas that share their first 46 characters share a channel: a
-- relay then wakes for the other's rows too, finds none of its own, and waits again.
CREATE OR REPLACE FUNCTION orderflow_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(left('orderflow_outbox:' || TG_TABLE_SCHEMA, 63), '');
    RETURN NULL;
END
$$;
