//! SoftHSM2 for the root tests: a private token directory and `SOFTHSM2_CONF`, one per test binary
//! (SoftHSM reads its configuration once per process, at `C_Initialize`).
#![allow(dead_code, unreachable_pub)]
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use treasury_signer::root::{HsmConfig, Pin, hsm};

/// The SoftHSM2 PKCS#11 module installed by the Debian package `softhsm2`.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const USER_PIN: &str = "246810";
/// The SO PIN of every test token.
pub const SO_PIN: &str = "13579111";

/// A private SoftHSM2 configuration and token directory.
pub struct SoftHsm {
    _dir: tempfile::TempDir,
    /// Path of the `softhsm2.conf` file.
    pub conf: PathBuf,
}

impl SoftHsm {
    /// Creates a configuration in a fresh tempdir.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        Self { _dir: dir, conf }
    }
}

/// The process-wide SoftHSM2, with `SOFTHSM2_CONF` pointing at it before any module is loaded.
pub fn shared() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let hsm = SoftHsm::new();
        // Set once, before any test loads the module; SoftHSM reads it in C_Initialize.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
        }
        hsm
    })
}

/// A fresh token labelled `token` in the shared SoftHSM, and the config of key `key` on it.
pub fn token(token: &str, key: &str) -> HsmConfig {
    shared();
    hsm::init_token(Path::new(MODULE), token, &Pin::new(SO_PIN), &Pin::new(USER_PIN)).unwrap();
    HsmConfig {
        module: MODULE.into(),
        token_label: token.into(),
        key_label: key.into(),
        pin: Pin::new(USER_PIN),
    }
}
