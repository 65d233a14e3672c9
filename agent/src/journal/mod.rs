//! The journal: intents, their state machine and event rows, signing requests, transactions, block cursor (sqlx).
