//! A private SoftHSM2 (configuration and token folder) for `treasury dev`, the tests and the
//! benches, and a way to run a test in a process of its own that uses it.
use std::path::{Path, PathBuf};

/// Where the Debian package `softhsm2` installs the PKCS#11 module.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The environment variable that names another PKCS#11 module.
pub const MODULE_ENV: &str = "TREASURY_HSM_MODULE";
/// The user PIN of every test token.
pub const USER_PIN: &str = "246810";
/// The SO PIN of every test token.
pub const SO_PIN: &str = "13579111";
/// Set in the child process [`in_own_process`] starts.
const CHILD_ENV: &str = "TREASURY_DEVNET_SOFTHSM_CHILD";

/// The PKCS#11 module to use: `TREASURY_HSM_MODULE`, else SoftHSM2's.
pub fn module() -> PathBuf {
    std::env::var_os(MODULE_ENV).map(PathBuf::from).unwrap_or_else(|| DEFAULT_MODULE.into())
}

/// A SoftHSM2 configuration and its token folder in a directory.
#[derive(Debug)]
pub struct SoftHsm {
    /// Path of its `softhsm2.conf` (for `SOFTHSM2_CONF`).
    pub conf: PathBuf,
    /// The PKCS#11 module.
    pub module: PathBuf,
}

impl SoftHsm {
    /// Writes `softhsm2.conf` and an empty `tokens/` folder in `dir` (created if missing).
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)?;
        let conf = dir.join("softhsm2.conf");
        let text = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        );
        std::fs::write(&conf, text)?;
        Ok(Self { conf, module: module() })
    }

    /// The environment a `treasury` process needs to use this SoftHSM with the given PINs.
    pub fn env(&self, pin: &str, so_pin: &str) -> [(&'static str, std::ffi::OsString); 4] {
        [
            ("SOFTHSM2_CONF", self.conf.clone().into_os_string()),
            ("TREASURY_HSM_PIN", pin.into()),
            ("TREASURY_HSM_SO_PIN", so_pin.into()),
            (MODULE_ENV, self.module.clone().into_os_string()),
        ]
    }
}

/// Runs the calling test again in a child process of this test binary whose `SOFTHSM2_CONF`
/// names a fresh private SoftHSM2, and returns `true` in that child (where the test's body runs)
/// and `false` in the parent once the child passed; panics if it failed.
///
/// SoftHSM2 reads `SOFTHSM2_CONF` once, when a process loads it, and setting a variable in a
/// running test process is unsound; a process of its own per test is neither.
/// Call it first: `if !softhsm::in_own_process() { return; }`.
pub fn in_own_process() -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return true;
    }
    let test = std::thread::current().name().expect("called from a libtest test thread").to_owned();
    let dir = tempfile::tempdir().expect("a temporary folder for SoftHSM2");
    let hsm = SoftHsm::create(dir.path()).expect("writing the SoftHSM2 configuration");
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("SOFTHSM2_CONF", &hsm.conf)
        .output()
        .expect("starting the test's own process");
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{test} failed in its own process:\n{output}");
    assert!(output.contains("1 passed"), "{test} did not run in its own process:\n{output}");
    false
}
