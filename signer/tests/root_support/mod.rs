//! SoftHSM2 tokens for the root tests. Each test that uses one runs in a process of its own
//! with a private SoftHSM2 (`treasury_devnet::softhsm::in_own_process`): SoftHSM reads its
//! configuration once per process.
#![allow(dead_code, unreachable_pub)]
use treasury_devnet::softhsm::{self, SO_PIN, USER_PIN};
use treasury_signer::root::{HsmConfig, Pin, hsm};

/// A fresh token labelled `token` in this process's SoftHSM, and the config of key `key` on it.
pub fn token(token: &str, key: &str) -> HsmConfig {
    let module = softhsm::module();
    hsm::init_token(&module, token, &Pin::new(SO_PIN), &Pin::new(USER_PIN)).unwrap();
    HsmConfig { module, token_label: token.into(), key_label: key.into(), pin: Pin::new(USER_PIN) }
}
