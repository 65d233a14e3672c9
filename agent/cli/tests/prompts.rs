//! Secrets typed at a terminal when their variable is unset: `treasury` run under a pseudo-terminal
//! (util-linux `script`), the secret typed on it.
use std::io::{Read, Write};
use std::process::{Command, Stdio};

#[path = "common/softhsm.rs"]
mod softhsm;
use softhsm::SoftHsm;

/// Runs `treasury ARGS` under a pseudo-terminal; for each (prompt, line) waits until the prompt
/// is on the screen, then types the line. Returns whether it succeeded and what the screen showed.
fn on_a_terminal(
    args: &str,
    envs: &[(String, String)],
    remove: &[&str],
    typing: &[(&str, &str)],
) -> (bool, String) {
    let exe = env!("CARGO_BIN_EXE_treasury");
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &format!("{exe} {args}"), "/dev/null"])
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in remove {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().expect("util-linux script");
    let mut keyboard = child.stdin.take().unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, chunks) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = String::new();
    let mut seen = 0;
    for (prompt, line) in typing {
        while !screen[seen..].contains(prompt) {
            match chunks.recv() {
                Ok(c) => screen.push_str(&String::from_utf8_lossy(&c)),
                Err(_) => return (child.wait().unwrap().success(), screen),
            }
        }
        seen = screen.rfind(prompt).unwrap() + prompt.len();
        keyboard.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    while let Ok(c) = chunks.recv() {
        screen.push_str(&String::from_utf8_lossy(&c));
    }
    drop(keyboard);
    (child.wait().unwrap().success(), screen)
}

#[test]
fn an_approver_password_is_typed_twice_and_must_match() {
    let remove = ["TREASURY_APPROVER_PASSWORD"];
    let twice = |second| {
        [("password (TREASURY_APPROVER_PASSWORD is not set): ", "a-long-password-1"), ("again: ", second)]
    };
    let (ok, screen) = on_a_terminal("root hash-password", &[], &remove, &twice("a-long-password-1"));
    assert!(ok, "{screen}");
    assert!(screen.contains("New approver password (TREASURY_APPROVER_PASSWORD is not set)"), "{screen}");
    assert!(screen.contains("password_hash = \"$argon2id$"), "{screen}");
    assert!(!screen.contains("a-long-password-1"), "the password is not echoed: {screen}");
    let (ok, screen) = on_a_terminal("root hash-password", &[], &remove, &twice("a-long-password-2"));
    assert!(!ok && screen.contains("the two entries differ"), "{screen}");
    // Without a terminal, the variable is named.
    let out = Command::new(env!("CARGO_BIN_EXE_treasury"))
        .args(["root", "hash-password"])
        .env_remove("TREASURY_APPROVER_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("TREASURY_APPROVER_PASSWORD is not set"), "{err}");
}

#[test]
fn the_hsm_pin_is_asked_for_when_its_variable_is_unset() {
    let hsm = SoftHsm::new();
    let init = "root init --token root-token --key root";
    // Made with the PIN in the environment (the SO PIN creates the token).
    let out = hsm.command("424242", "87654321", &init.split(' ').collect::<Vec<_>>()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let address = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // The same key, opened with the PIN typed at the prompt.
    let env: Vec<(String, String)> = vec![("SOFTHSM2_CONF".into(), hsm.conf.display().to_string())];
    let (ok, screen) = on_a_terminal(
        init,
        &env,
        &["TREASURY_HSM_PIN", "TREASURY_HSM_SO_PIN"],
        &[("PIN (TREASURY_HSM_PIN is not set): ", "424242")],
    );
    assert!(ok, "{screen}");
    assert!(screen.contains("user PIN (TREASURY_HSM_PIN is not set)"), "{screen}");
    assert!(screen.contains(&address), "the typed PIN opens the same key {address}: {screen}");
    assert!(!screen.contains("424242"), "the PIN is not echoed: {screen}");
}
