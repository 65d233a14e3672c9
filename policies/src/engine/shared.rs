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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_sets_with_the_same_limits_share_one_engine_and_other_limits_get_their_own() {
        let a = engine(&Limits::default());
        let b = engine(&Limits::default());
        assert!(Arc::ptr_eq(&a, &b), "one engine for the same limits");
        let other = Limits { max_operations: 12_345, ..Limits::default() };
        let c = engine(&other);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.max_operations(), 12_345, "built with its own limits");
        assert_eq!(a.max_operations(), Limits::default().max_operations);
    }
}
