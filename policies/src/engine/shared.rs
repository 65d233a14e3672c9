//! One sandboxed engine per set of limits for the whole process: the script API registered in an
//! engine costs about half a megabyte, and a process serving many treasuries (or a signer node
//! replaying many decisions) would otherwise build one per policy set.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use rhai::Engine;

use crate::config::Limits;

/// The engines alive in this process, by the limits they enforce.
type Engines = Mutex<Vec<(Limits, Weak<Engine>)>>;

/// The process's engine enforcing `limits`, built if none is alive.
pub(crate) fn engine(limits: &Limits) -> Arc<Engine> {
    static ENGINES: OnceLock<Engines> = OnceLock::new();
    let mut engines = ENGINES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    engines.retain(|(_, e)| e.strong_count() > 0);
    if let Some(engine) = engines.iter().find(|(l, _)| l == limits).and_then(|(_, e)| e.upgrade()) {
        return engine;
    }
    let engine = Arc::new(super::sandbox::engine(limits));
    engines.push((*limits, Arc::downgrade(&engine)));
    engine
}
