-- A command a gateway acknowledged as received but whose final answer never reached
-- the platform (the session dropped with it in flight) is delivered again on the
-- gateway's next session until its window ends; a gateway answers a command it knows
-- as before. This index finds them as the pending index finds the undelivered.
create index der_command_unanswered_idx on pm.der_command (gateway_id, end_at) where status = 'received';
