//! The approvals page's lockout, over HTTP against `treasury root serve` (SoftHSM2): five wrong
//! passwords in a row lock the approver's name, the right password is then refused while the lock
//! lasts, and the lock is the name's alone (another approver still signs in).
use std::path::PathBuf;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};

#[path = "common/softhsm.rs"]
mod softhsm;
use softhsm::{MODULE, SoftHsm, serve};

const PIN: &str = "424242";
const SO_PIN: &str = "87654321";
const ALICE_PASSWORD: &str = "alice's correct password";
const BOB_PASSWORD: &str = "bob's correct password";

fn run(hsm: &SoftHsm, args: &[&str], envs: &[(&str, &str)]) -> (String, String) {
    let out = hsm.command(PIN, SO_PIN, args).envs(envs.iter().copied()).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "treasury {args:?}: {stderr}");
    (stdout, stderr)
}

/// An approver's `[[clients]]` entry with its password hash.
fn approver(hsm: &SoftHsm, name: &str, password: &str) -> String {
    let (_, entry) = run(hsm, &["root", "new-token", "--name", name, "--role", "approver"], &[]);
    let (hash_line, _) = run(hsm, &["root", "hash-password"], &[("TREASURY_APPROVER_PASSWORD", password)]);
    format!("{}\n{}\n", entry.trim(), hash_line.trim())
}

fn config(hsm: &SoftHsm) -> PathBuf {
    let (out, _) = run(hsm, &["root", "init", "--token", "root-token", "--key", "root", "--json"], &[]);
    let address =
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["address"].as_str().unwrap().to_owned();
    let text = format!(
        r#"db = "{db}"

[hsm]
module = "{MODULE}"
token = "root-token"
key = "root"
address = "{address}"

[[guard.modules]]
chain_id = 31337
module = "0x4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d"

{alice}
{bob}
"#,
        db = hsm.path().join("queue.sqlite").display(),
        alice = approver(hsm, "alice", ALICE_PASSWORD),
        bob = approver(hsm, "bob", BOB_PASSWORD),
    );
    let path = hsm.path().join("root.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The value of the cookie `name` a response sets, if any.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        v.strip_prefix(&format!("{name}="))?.split(';').next().map(str::to_owned)
    })
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// A root service with alice and bob as approvers, a client that does not follow redirects, and
/// the service's base URL (the HSM and the service live as long as the first two values).
fn start() -> (SoftHsm, softhsm::Service, reqwest::Client, String) {
    let hsm = SoftHsm::new();
    let config = config(&hsm);
    let service = serve(hsm.command(
        PIN,
        SO_PIN,
        &["root", "serve", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    ));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = service.url.trim_end_matches('/').to_owned();
    (hsm, service, http, base)
}

/// Signs in as `name` with `password` through the page's form (its CSRF cookie and field), and
/// returns the answer's status, body and session cookie.
async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    password: &str,
) -> (StatusCode, String, Option<String>) {
    let page = http.get(format!("{base}/approvals/login")).send().await.unwrap();
    let csrf = set_cookie(&page, "treasury_root_login").expect("the sign-in form's cookie");
    let resp = http
        .post(format!("{base}/approvals/login"))
        .header(COOKIE, format!("treasury_root_login={csrf}"))
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[("csrf", &csrf), ("name", name), ("password", password)]))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let session = set_cookie(&resp, "treasury_root_session");
    (status, resp.text().await.unwrap(), session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_passwords_lock_the_approver_and_the_right_one_is_refused_while_locked() {
    let (_hsm, _service, http, base) = start();

    for attempt in 1..=5 {
        let (status, body, session) =
            sign_in(&http, &base, "alice", &format!("guess number {attempt}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        assert!(body.contains("Wrong name or password."), "attempt {attempt}: {body}");
        assert!(session.is_none());
    }
    let (status, body, session) = sign_in(&http, &base, "alice", ALICE_PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the right password while locked: {body}");
    assert!(body.contains("Too many wrong passwords"), "{body}");
    assert!(session.is_none(), "no session while locked");
    let (status, _, _) = sign_in(&http, &base, "alice", "a sixth guess").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "guessing goes on refused, unchecked");

    let (status, _, session) = sign_in(&http, &base, "bob", BOB_PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the lock is alice's alone");
    let session = session.expect("bob's session cookie");
    let page = http
        .get(format!("{base}/approvals"))
        .header(COOKIE, format!("treasury_root_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_wrong_passwords_then_the_right_one_signs_in() {
    let (_hsm, _service, http, base) = start();
    for attempt in 1..=4 {
        let (status, _, _) = sign_in(&http, &base, "alice", &format!("guess number {attempt}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, session) = sign_in(&http, &base, "alice", ALICE_PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "below the limit the right password signs in");
    assert!(session.is_some());
}
