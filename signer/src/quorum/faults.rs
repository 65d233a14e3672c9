//! Test-only fault injection for signer nodes, compiled only with the `fault-injection` feature.
//!
//! The process tests start `treasury signer serve` with [`FAULTS_ENV`] set, e.g.
//! `corrupt-shares`, `refuse-refresh-commit`, `dkg-equivocate`, `exit-at-activate` or `sign-delay-ms=600000`, to get a node that answers invalid signature
//! shares or holds every signing request before handling it. A build without the feature has no
//! such behaviour: a node started with the variable set refuses to start (see
//! [`super::node::BoundNode::bind`]).
use std::time::Duration;

use super::error::QuorumError;

pub use super::node::FAULTS_ENV;

/// The line a delayed node prints on stdout when a signing request arrives and is held.
pub const SIGN_DELAYED_EVENT: &str = "sign_request_held";

/// Faults a node was started with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Answer signature shares that fail `verify_signature_share`.
    pub corrupt_shares: bool,
    /// Hold each `/v1/sign` request this long before handling it.
    pub sign_delay: Option<Duration>,
    /// Refuse to commit the shares of a refresh (as a node whose disk fails at that moment).
    pub refuse_refresh_commit: bool,
    /// In DKG round 2, send the first peer the share meant for the second (equivocation).
    pub dkg_equivocate: bool,
    /// Refuse the first refresh activation request (as a node unreachable at that moment).
    pub refuse_activate_once: bool,
    /// Exit the process when a refresh activation request arrives, before activating (a node
    /// that goes down between staging and activation).
    pub exit_at_activate: bool,
}

/// Whether this process already refused an activation under `refuse-activate-once`.
static ACTIVATION_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Faults {
    /// Parses a comma-separated list: `corrupt-shares`, `sign-delay-ms=N`.
    pub fn parse(spec: &str) -> Result<Self, QuorumError> {
        let mut f = Self::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                None if item == "corrupt-shares" => f.corrupt_shares = true,
                None if item == "refuse-refresh-commit" => f.refuse_refresh_commit = true,
                None if item == "dkg-equivocate" => f.dkg_equivocate = true,
                None if item == "refuse-activate-once" => f.refuse_activate_once = true,
                None if item == "exit-at-activate" => f.exit_at_activate = true,
                Some(("sign-delay-ms", ms)) => {
                    let ms: u64 =
                        ms.parse().map_err(|e| QuorumError::Config(format!("{FAULTS_ENV} {item}: {e}")))?;
                    f.sign_delay = Some(Duration::from_millis(ms));
                }
                _ => return Err(QuorumError::Config(format!("{FAULTS_ENV}: unknown fault {item:?}"))),
            }
        }
        Ok(f)
    }

    /// The faults named in [`FAULTS_ENV`] (none when it is unset).
    pub fn from_env() -> Result<Self, QuorumError> {
        match std::env::var(FAULTS_ENV) {
            Ok(spec) => Self::parse(&spec),
            Err(std::env::VarError::NotPresent) => Ok(Self::default()),
            Err(e) => Err(QuorumError::Config(format!("{FAULTS_ENV}: {e}"))),
        }
    }

    /// Holds a signing request for the configured delay, announcing it on stdout first.
    pub(crate) async fn before_sign(&self) {
        if let Some(d) = self.sign_delay {
            println!(
                "{}",
                serde_json::json!({ "event": SIGN_DELAYED_EVENT, "delay_ms": d.as_millis() as u64 })
            );
            tokio::time::sleep(d).await;
        }
    }

    /// True exactly once per process when `refuse_activate_once` is on: the activation to refuse.
    pub(crate) fn refuses_activation(&self) -> bool {
        self.refuse_activate_once && !ACTIVATION_REFUSED.swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// Flips a bit of a serialized signature share when `corrupt_shares` is on.
    pub(crate) fn corrupt(&self, share: &mut [u8]) {
        if self.corrupt_shares
            && let Some(b) = share.last_mut()
        {
            *b ^= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fault_list_and_rejects_unknown_faults() {
        assert_eq!(Faults::parse("").unwrap(), Faults::default());
        let f = Faults::parse("corrupt-shares, sign-delay-ms=250").unwrap();
        assert!(f.corrupt_shares);
        assert_eq!(f.sign_delay, Some(Duration::from_millis(250)));
        let f = Faults::parse("dkg-equivocate,refuse-activate-once").unwrap();
        assert!(f.dkg_equivocate && f.refuse_activate_once && !f.corrupt_shares);
        assert!(Faults::parse("exit-at-activate").unwrap().exit_at_activate);
        assert!(Faults::parse("sign-delay-ms=soon").is_err());
        assert!(Faults::parse("explode").is_err());
    }
}
