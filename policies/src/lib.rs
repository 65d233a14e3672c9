//! Rhai policies: the engine, its sandbox and the intents scripts return (see issue 5).
