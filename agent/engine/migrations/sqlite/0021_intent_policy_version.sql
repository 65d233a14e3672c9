-- Which version of its policy produced each intent (issue 20): `PolicySet::version`, the first 16
-- hex digits of the SHA-256 of the script's source. NULL for intents journaled before versions
-- were recorded (and for intents not produced by a script). The number 0021 (the issue) keeps it
-- apart from other branches' next migrations; sqlx applies any missing.
ALTER TABLE intents ADD COLUMN policy_version TEXT;
