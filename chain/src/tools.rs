//! Where the foundry tools (anvil for forks and local chains) and the npm packages are found at
//! run time: `scripts/install.sh` installs them into `.tools/node_modules`.

use std::path::PathBuf;

/// Environment variable naming the folder that holds the npm packages (`node_modules`).
pub const TOOLS_ENV: &str = "TREASURY_TOOLS_DIR";

/// The `node_modules` folder holding the toolchain: `$TREASURY_TOOLS_DIR`, else `.tools/node_modules`
/// in the current directory or the nearest of its parents that has one (a checkout of treasury).
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(TOOLS_ENV) {
        return PathBuf::from(dir);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .map(|dir| dir.join(".tools/node_modules"))
        .find(|candidate| candidate.is_dir())
        .unwrap_or_else(|| cwd.join(".tools/node_modules"))
}

/// The npm platform suffix of foundry's binary packages for this machine (`linux-amd64`, …).
fn foundry_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{}-{arch}", std::env::consts::OS)
}

/// Path of a foundry binary (`anvil`, `forge`, `cast`) installed from npm.
pub fn foundry_binary(tool: &str) -> PathBuf {
    tools_dir().join(format!("@foundry-rs/{tool}-{}/bin/{tool}", foundry_platform()))
}
