-- The histories' query (`decided_intents_with`) asks, for each decided intent, its newest
-- operation and the block of that operation's newest transaction. These indexes hold every
-- column those lookups read, so they touch no `operations` or `transactions` row (each holds
-- kilobytes of JSON and raw transaction) and the query's cost does not grow with those rows. The
-- first replaces the index on `intent_id` alone.
CREATE INDEX operation_intents_intent_operation ON operation_intents (intent_id, operation_id);
DROP INDEX operation_intents_intent;
CREATE INDEX operations_created ON operations (operation_id, created_at);
CREATE INDEX transactions_operation_block ON transactions (operation_id, id, block_number);
