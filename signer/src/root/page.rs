//! The approvals page: server-rendered HTML on the root service for named approvers.
//!
//! - `GET /approvals`: the pending requests decoded ([`super::approvals::view`]), approve and
//!   reject (a reason required), the recent decisions and the audit log; signed-out visitors are
//!   sent to `GET /approvals/login`.
//! - `POST /approvals/login` (name, password), `POST /approvals/logout`,
//!   `POST /approvals/requests/{id}/approve`, `POST /approvals/requests/{id}/reject` (reason).
//!
//! # Security
//! Approvers are `[[clients]]` of role approver with a `password_hash` (Argon2id, PHC string);
//! five wrong passwords in a row lock the name for a minute. A session is a random 256-bit id
//! in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` with `approvals.secure_cookie`), kept
//! in memory as its SHA-256 and ending after `approvals.session_ttl_secs` or at sign-out. Every
//! form carries the session's CSRF token (the sign-in form a token double-submitted in its own
//! cookie), compared in constant time; a POST whose `Origin` names another host is refused.
//! Nothing that grants anything appears in a URL. Approvals go through
//! [`RootService::approve`]: the same rules (k of m) and tags as the API and the CLI.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::approvals::{RequestView, view};
use super::config::Role;
use super::service::RootService;
use super::store::{RequestRecord, RequestState};

const SESSION_COOKIE: &str = "treasury_root_session";
const LOGIN_COOKIE: &str = "treasury_root_login";
const MAX_FAILURES: u32 = 5;
const LOCKOUT: Duration = Duration::from_secs(60);

struct Session {
    name: String,
    csrf: String,
    expires: Instant,
    flash: Option<String>,
}

/// The page's state: the service and the signed-in sessions.
struct Page {
    svc: Arc<RootService>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

/// The page's routes.
pub fn router(svc: Arc<RootService>) -> Router {
    let page = Arc::new(Page { svc, sessions: Mutex::default(), failures: Mutex::default() });
    Router::new()
        .route("/", get(|| async { Redirect::to("/approvals") }))
        .route("/approvals", get(index))
        .route("/approvals/login", get(login_form).post(login))
        .route("/approvals/logout", post(logout))
        .route("/approvals/requests/{id}/approve", post(approve))
        .route("/approvals/requests/{id}/reject", post(reject))
        .with_state(page)
}

fn random_hex() -> String {
    use rand_core::RngCore;
    let mut b = Zeroizing::new([0u8; 32]);
    rand_core::OsRng.fill_bytes(b.as_mut());
    hex::encode(b.as_ref())
}

fn session_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes())) && !a.is_empty()
}

/// A POST whose `Origin` names another host than the one it was sent to.
fn cross_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    origin == "null" || origin_host != host
}

/// An HTML answer with the page's security headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// HTML-escapes text.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;justify-content:space-between;align-items:center}\
header form{display:inline}main{padding:16px 24px;max-width:1100px}\
.card{background:#fff;border:1px solid #d8dbe2;border-radius:6px;padding:14px 18px;margin:14px 0}\
table{border-collapse:collapse;width:100%;margin:6px 0}td,th{border-bottom:1px solid #e3e5ea;padding:5px 8px;text-align:left;font-size:14px;vertical-align:top}\
th{background:#f0f1f4}.addr{font-family:monospace;font-size:12px;color:#555}.claim{background:#fffbea;border-left:4px solid #e2b714;padding:6px 10px}\
.warn{color:#a4262c}.ok{color:#1a7f37}button{padding:6px 14px;border-radius:4px;border:1px solid #888;cursor:pointer}\
button.approve{background:#1a7f37;color:#fff;border-color:#1a7f37}button.reject{background:#a4262c;color:#fff;border-color:#a4262c}\
.flash{background:#e6f4ea;border:1px solid #1a7f37;padding:8px 12px;border-radius:4px}.error{background:#fdecea;border:1px solid #a4262c;padding:8px 12px;border-radius:4px}\
input[type=text],input[type=password]{padding:6px;width:260px}";

fn layout(title: &str, user: Option<(&str, &str)>, body: &str) -> String {
    let who = match user {
        Some((name, csrf)) => format!(
            "<span>Signed in as <b id=\"user\">{}</b> <form method=\"post\" action=\"/approvals/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button id=\"logout\">Sign out</button></form></span>",
            esc(name),
            esc(csrf)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><header><b>treasury · root approvals</b>{who}</header><main>{body}</main></body></html>",
        esc(title)
    )
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let token = random_hex();
    let error = error.map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<div class=\"card\"><h2>Sign in</h2>{error}<form method=\"post\" action=\"/approvals/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <p><label>Approver<br><input type=\"text\" name=\"name\" id=\"name\" autocomplete=\"username\"></label></p>\
         <p><label>Password<br><input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\"></label></p>\
         <p><button id=\"sign-in\">Sign in</button></p></form></div>"
    );
    let mut resp = html(status, layout("Sign in", None, &body));
    let value = format!("{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/approvals/login");
    resp.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&value).expect("ascii cookie"));
    resp
}

fn refused(status: StatusCode, why: &str) -> Response {
    let body =
        format!("<p class=\"error\" id=\"error\">{}</p><p><a href=\"/approvals\">Back</a></p>", esc(why));
    html(status, layout("Refused", None, &body))
}

impl Page {
    /// The signed-in approver's (name, csrf) for this request's session cookie, dropping an expired one.
    fn session(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let key = session_key(cookie(headers, SESSION_COOKIE)?);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        let s = sessions.get(&key)?;
        Some((s.name.clone(), s.csrf.clone()))
    }

    fn take_flash(&self, headers: &HeaderMap) -> Option<String> {
        let key = session_key(cookie(headers, SESSION_COOKIE)?);
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&key)?.flash.take()
    }

    fn flash(&self, headers: &HeaderMap, text: String) {
        let Some(id) = cookie(headers, SESSION_COOKIE) else { return };
        if let Some(s) = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&session_key(id)) {
            s.flash = Some(text);
        }
    }

    /// The approver a form POST acts for: signed in, same origin, and the form's CSRF token is
    /// the session's. Otherwise the refusal to answer.
    fn authorise(&self, headers: &HeaderMap, csrf: &str) -> Result<String, Box<Response>> {
        if cross_origin(headers) {
            return Err(Box::new(refused(
                StatusCode::FORBIDDEN,
                "Refused: the form was sent from another site.",
            )));
        }
        let Some((name, want)) = self.session(headers) else {
            return Err(Box::new(refused(
                StatusCode::UNAUTHORIZED,
                "Refused: you are not signed in (or your session ended).",
            )));
        };
        if !same(csrf, &want) {
            tracing::warn!(approver = %name, "approvals page: a form with a wrong CSRF token was refused");
            return Err(Box::new(refused(
                StatusCode::FORBIDDEN,
                "Refused: the form's CSRF token does not match your session. Reload the page and try again.",
            )));
        }
        Ok(name)
    }

    fn locked(&self, name: &str) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(name).is_some_and(|(n, at)| *n >= MAX_FAILURES && at.elapsed() < LOCKOUT)
    }

    fn failed(&self, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures.entry(name.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= LOCKOUT {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = Instant::now();
    }
}

async fn login_form(State(page): State<Arc<Page>>, headers: HeaderMap) -> Response {
    if page.session(&headers).is_some() {
        return see_other("/approvals");
    }
    login_page(StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// Verifies `password` against `hash` (PHC string); a missing hash verifies against a dummy so
/// an unknown name costs the same time as a wrong password.
fn password_ok(hash: Option<&str>, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    const DUMMY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$DgCN2Wc8SaBN1sDPN1Ntn0ad2xsEyTqyfZ9v4ST45Lk";
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or(DUMMY)) else { return false };
    argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && hash.is_some()
}

/// A new Argon2id hash (PHC string) of `password`, for a client's `password_hash`.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut rand_core::OsRng);
    Ok(argon2::Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

async fn login(State(page): State<Arc<Page>>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    if cross_origin(&headers) {
        return refused(StatusCode::FORBIDDEN, "Refused: the form was sent from another site.");
    }
    if !same(&form.csrf, cookie(&headers, LOGIN_COOKIE).unwrap_or_default()) {
        return login_page(StatusCode::FORBIDDEN, Some("The sign-in form expired or was forged: try again."));
    }
    let name = form.name.trim().to_owned();
    if page.locked(&name) {
        return login_page(StatusCode::TOO_MANY_REQUESTS, Some("Too many wrong passwords: wait a minute."));
    }
    let hash = page
        .svc
        .config
        .clients
        .iter()
        .find(|c| c.name == name && c.role == Role::Approver)
        .and_then(|c| c.password_hash.clone());
    let password = Zeroizing::new(form.password);
    let ok =
        tokio::task::spawn_blocking(move || password_ok(hash.as_deref(), &password)).await.unwrap_or(false);
    if !ok {
        page.failed(&name);
        tracing::warn!(approver = %name, "approvals page: sign-in refused (wrong name or password)");
        return login_page(StatusCode::UNAUTHORIZED, Some("Wrong name or password."));
    }
    page.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
    let id = random_hex();
    let ttl = Duration::from_secs(page.svc.config.approvals.session_ttl_secs.max(60));
    let session =
        Session { name: name.clone(), csrf: random_hex(), expires: Instant::now() + ttl, flash: None };
    page.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(session_key(&id), session);
    tracing::info!(approver = %name, "approvals page: signed in");
    let secure = if page.svc.config.approvals.secure_cookie { "; Secure" } else { "" };
    let value = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/approvals; Max-Age={}{secure}",
        ttl.as_secs()
    );
    let mut resp = see_other("/approvals");
    resp.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&value).expect("ascii cookie"));
    resp
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(page): State<Arc<Page>>, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if let Err(resp) = page.authorise(&headers, &form.csrf) {
        return *resp;
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        page.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&session_key(id));
    }
    let mut resp = see_other("/approvals/login");
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/approvals; Max-Age=0");
    resp.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&clear).expect("ascii cookie"));
    resp
}

async fn approve(
    State(page): State<Arc<Page>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let name = match page.authorise(&headers, &form.csrf) {
        Ok(n) => n,
        Err(resp) => return *resp,
    };
    let text = match page.svc.approve(&id, &name).await {
        Ok(rec) if rec.state == RequestState::Pending => {
            let (have, need) =
                page.svc.approval_progress(&id).await.map(|(a, n)| (a.len(), n)).unwrap_or((1, 2));
            format!("You approved request {id}: {have} of {need} approvals; it waits for another approver.")
        }
        Ok(rec) => format!("You approved request {id}: it is {}.", rec.state),
        Err(e) => format!("Request {id} was not approved: {}", crate::error_chain(&e)),
    };
    page.flash(&headers, text);
    see_other("/approvals")
}

#[derive(Deserialize)]
struct RejectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn reject(
    State(page): State<Arc<Page>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RejectForm>,
) -> Response {
    let name = match page.authorise(&headers, &form.csrf) {
        Ok(n) => n,
        Err(resp) => return *resp,
    };
    let text = match page.svc.reject(&id, &name, form.reason.trim()).await {
        Ok(_) => format!("You rejected request {id}."),
        Err(e) => format!("Request {id} was not rejected: {}", crate::error_chain(&e)),
    };
    page.flash(&headers, text);
    see_other("/approvals")
}

fn time(unix: u64) -> String {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX);
    match time_fmt(secs) {
        Some(t) => t,
        None => unix.to_string(),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, proleptic Gregorian).
fn time_fmt(secs: i64) -> Option<String> {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    Some(format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60))
}

fn named(n: &super::approvals::Named) -> String {
    match &n.name {
        Some(name) => format!("<b>{}</b> <span class=\"addr\">{}</span>", esc(name), n.address),
        None => format!(
            "<span class=\"warn\">not in the root's address book</span> <span class=\"addr\">{}</span>",
            n.address
        ),
    }
}

fn request_card(
    rec: &RequestRecord,
    v: &RequestView,
    approvals: &[super::store::Approval],
    need: u32,
    csrf: &str,
) -> String {
    let id = esc(&rec.id);
    let mut out = format!(
        "<div class=\"card\" id=\"request-{id}\"><h3>Request {id} <small>({kind}, from {req}, queued {at}, expires {exp})</small></h3>",
        kind = rec.request.kind(),
        req = esc(&rec.requester),
        at = time(rec.created_at),
        exp = time(rec.expires_at),
    );
    if let Some(admin) = &v.admin {
        let _ = write!(out, "<p>Admin change: <b>{}</b></p>", esc(admin));
    } else {
        out.push_str("<h4>What it does (decoded by the root from the operation it will sign)</h4><table class=\"calls\"><tr><th>#</th><th>action</th><th>amount</th><th>USD at pinned block</th><th>to</th><th>contract</th></tr>");
        for (i, c) in v.calls.iter().enumerate() {
            let _ = write!(
                out,
                "<tr><td>{i}</td><td>{}</td><td class=\"amount\">{}</td><td class=\"usd\">{}</td><td class=\"recipient\">{}</td><td>{}</td></tr>",
                esc(&c.action),
                esc(c.amount.as_deref().unwrap_or("")),
                esc(c.usd.as_deref().unwrap_or("—")),
                c.to.as_ref().map(named).unwrap_or_default(),
                named(&c.target),
            );
        }
        out.push_str("</table>");
        if let Some(total) = &v.usd_total {
            let _ = write!(out, "<p>Total value: <b id=\"usd-total-{id}\">{}</b></p>", esc(total));
        }
    }
    match &v.context {
        Some(c) => {
            out.push_str("<div class=\"claim\"><p><b>The agent's account</b> (sent with the request; the root shows it but does not check it)</p><ul>");
            for i in &c.intents {
                let _ = write!(
                    out,
                    "<li>policy <b class=\"policy\">{}</b>, trigger <code>{}</code>{}</li>",
                    esc(&i.policy),
                    esc(&i.trigger),
                    i.memo.as_deref().map(|m| format!(", memo “{}”", esc(m))).unwrap_or_default()
                );
            }
            if let Some(b) = &c.block {
                let _ = write!(
                    out,
                    "<li>planned at block {} ({}), prices of that block</li>",
                    b.number,
                    time(b.timestamp)
                );
            }
            for b in &v.budgets {
                let _ = write!(out, "<li class=\"budget\">{}</li>", esc(b));
            }
            for r in c.reasons.iter().filter(|_| v.budgets.is_empty()) {
                let _ = write!(out, "<li>{}</li>", esc(r));
            }
            if let Some(s) = &c.simulation {
                let _ = write!(out, "<li>simulation: <span class=\"simulation\">{}</span></li>", esc(s));
            }
            out.push_str("</ul></div>");
        }
        None => {
            out.push_str("<p class=\"claim\">The requester sent no context (policy, prices, budgets).</p>")
        }
    }
    let who: Vec<String> = approvals.iter().map(|a| esc(&a.approver)).collect();
    let _ = write!(
        out,
        "<p>Approvals: <b id=\"approvals-{id}\">{} of {need}</b>{}</p>",
        approvals.len(),
        if who.is_empty() { String::new() } else { format!(" ({})", who.join(", ")) }
    );
    if rec.state == RequestState::Pending {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/approvals/requests/{id}/approve\" style=\"display:inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button class=\"approve\" id=\"approve-{id}\">Approve</button></form> \
             <form method=\"post\" action=\"/approvals/requests/{id}/reject\" style=\"display:inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"text\" name=\"reason\" id=\"reason-{id}\" placeholder=\"reason (required)\" required> <button class=\"reject\" id=\"reject-{id}\">Reject</button></form>",
            csrf = esc(csrf)
        );
    }
    out.push_str("</div>");
    out
}

async fn index(State(page): State<Arc<Page>>, headers: HeaderMap) -> Response {
    let Some((name, csrf)) = page.session(&headers) else { return see_other("/approvals/login") };
    let flash = page.take_flash(&headers);
    let svc = &page.svc;
    let all = match svc.list(None).await {
        Ok(l) => l,
        Err(e) => return refused(StatusCode::SERVICE_UNAVAILABLE, &crate::error_chain(&e)),
    };
    let mut body = String::new();
    if let Some(f) = flash {
        let _ = write!(body, "<p class=\"flash\" id=\"flash\">{}</p>", esc(&f));
    }
    let pending: Vec<&RequestRecord> = all.iter().filter(|r| r.state == RequestState::Pending).collect();
    let _ = write!(body, "<h2>Waiting for approval ({})</h2>", pending.len());
    if pending.is_empty() {
        body.push_str("<p id=\"none-pending\">Nothing waits for an approver.</p>");
    }
    for rec in pending {
        let (approvals, need) = svc.approval_progress(&rec.id).await.unwrap_or_default();
        body.push_str(&request_card(rec, &view(rec, &svc.config.book), &approvals, need, &csrf));
    }
    body.push_str("<h2>Recent requests</h2><table id=\"recent\"><tr><th>request</th><th>state</th><th>what</th><th>decided by</th><th>reason</th></tr>");
    for rec in all.iter().filter(|r| r.state != RequestState::Pending).take(20) {
        let v = view(rec, &svc.config.book);
        let what = v.admin.clone().unwrap_or_else(|| {
            v.calls
                .iter()
                .map(|c| format!("{} {}", c.action, c.amount.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; ")
        });
        let _ = write!(
            body,
            "<tr id=\"recent-{id}\"><td>{id}</td><td class=\"state\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            rec.state,
            esc(&what),
            esc(rec.decided_by.as_deref().unwrap_or("")),
            esc(rec.reason.as_deref().unwrap_or("")),
            id = esc(&rec.id)
        );
    }
    body.push_str("</table><h2>Audit log</h2><p>Every decision, newest first; the log is append-only.</p><table id=\"audit\"><tr><th>when</th><th>request</th><th>decision</th><th>by</th><th>reason</th></tr>");
    for d in svc.audit_log(100).await.unwrap_or_default() {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(d.at),
            esc(&d.request_id),
            esc(&d.action),
            esc(&d.by),
            esc(d.reason.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</table>");
    html(StatusCode::OK, layout("Root approvals", Some((&name, &csrf)), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_times_read_in_utc() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_801_353_600), "2027-01-31 00:00:00 UTC");
    }

    #[test]
    fn a_password_verifies_against_its_hash_only() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(password_ok(Some(&hash), "correct horse battery"));
        assert!(!password_ok(Some(&hash), "correct horse batterY"));
        assert!(!password_ok(None, "correct horse battery"));
    }

    #[test]
    fn only_a_foreign_origin_is_cross_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7410"));
        assert!(!cross_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:7410"));
        assert!(!cross_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(cross_origin(&h));
    }
}
