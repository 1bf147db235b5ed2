//! The admin API of a running gateway: closed without the token, and configuration created
//! through it survives a restart (SQLite under the data directory, the embedded default).

use super::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One HTTP/1.1 request (connection closed after it): the status and the body.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out}"));
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

const PEER: &str = r#"{"name":"pbx-main","transport":"udp","addresses":["127.0.0.1:5070"],"allow_list":["127.0.0.1/32"],"inbound_auth":{"username":"pbx","password":"pbx-secret-9f"},"registration":"none","dtmf":"rfc4733","codecs":["PCMU","PCMA"],"srtp":"off","max_cps":10,"max_concurrent":100,"options_interval_s":30}"#;

#[test]
fn configuration_made_through_the_admin_api_survives_a_restart() {
    let mut first = start();
    let admin = first.admin.expect("no admin api line");
    let token = std::fs::read_to_string(first.dir.join("admin-token")).unwrap();
    let token = token.trim();

    let (status, body) = http(admin, "GET", "/api/v1/sip-peers", None, None);
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("\"status\":401"),
        "problem+json expected: {body}"
    );

    let (status, body) = http(admin, "POST", "/api/v1/sip-peers", Some(token), Some(PEER));
    assert_eq!(status, 201, "{body}");
    assert!(!body.contains("pbx-secret-9f"), "secret echoed: {body}");

    let dir = first.dir.clone();
    first.keep_dir = true;
    drop(first);

    let second = start_in(dir, &[]);
    let admin = second.admin.expect("no admin api line");
    let (status, body) = http(
        admin,
        "GET",
        "/api/v1/sip-peers?name=pbx-main",
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"pbx-main\""), "{body}");
    assert!(
        !body.contains("pbx-secret-9f"),
        "secret in a listing: {body}"
    );
    let (status, _) = http(admin, "GET", "/healthz", None, None);
    assert_eq!(status, 200);
    // Listeners are up (the gateway printed its RIPT address) and SQLite answers.
    let (status, body) = http(admin, "GET", "/readyz", None, None);
    assert_eq!(status, 200, "{body}");
}

/// A SIP peer created through the admin API admits its allow-listed source from the next
/// request on, without a restart (the gateway follows the store's configuration version).
#[test]
fn a_sip_peer_added_through_the_api_is_admitted_without_a_restart() {
    use super::sip::{Udp, request};
    let r = start_with(&[("RIPT_SIP_ALLOW", "")]);
    let admin = r.admin.expect("no admin api line");
    let token = std::fs::read_to_string(r.dir.join("admin-token")).unwrap();
    let udp = Udp::new(r.sip_udp);
    let register = |n: u32| {
        udp.send(&request(
            "REGISTER",
            r.sip_udp,
            udp.local(),
            &format!("reg-{n}"),
            "Expires: 60\r\n",
        ));
        udp.final_response().status()
    };
    assert_eq!(register(0), 403, "nobody is admitted yet");
    let peer = PEER.replace("pbx-main", "pbx-live");
    let (status, body) = http(
        admin,
        "POST",
        "/api/v1/sip-peers",
        Some(token.trim()),
        Some(&peer),
    );
    assert_eq!(status, 201, "{body}");
    // The gateway polls the configuration version once a second: the change lands within a
    // few polls, and never needs a restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 1;
    loop {
        let s = register(n);
        if s == 200 {
            break;
        }
        assert_eq!(s, 403, "only 403 until the peer is loaded");
        assert!(std::time::Instant::now() < deadline, "peer never admitted");
        std::thread::sleep(Duration::from_millis(200)); // re-asking, not synchronising
        n += 1;
    }
}

/// A database of its own on the Postgres of `DATABASE_URL`, dropped at the end.
struct PgDb {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDb {
    fn new() -> PgDb {
        let admin_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!("ript_gw_it_{}_{}", std::process::id(), rand_suffix());
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        PgDb {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .unwrap_or_else(|e| panic!("psql not runnable ({e})"));
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two gateways on one Postgres: every kind of configuration made through one instance's
/// admin API is seen through the other's, and survives the first one's restart.
#[test]
fn two_instances_on_one_postgres_share_configuration_that_survives_restarts() {
    let db = PgDb::new();
    // Instances sharing a database share the key of its encrypted secrets.
    let key = std::env::temp_dir().join(format!("{}.key", db.name));
    let key_s = key.display().to_string();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("RIPT_SECRET_KEY_FILE", key_s.as_str()),
    ];
    let mut a = start_with(&env);
    let b = start_with(&env);
    let token_a = std::fs::read_to_string(a.dir.join("admin-token")).unwrap();
    let token_b = std::fs::read_to_string(b.dir.join("admin-token")).unwrap();
    let (aa, ab) = (a.admin.unwrap(), b.admin.unwrap());
    let bodies = [
        ("sip-peers", PEER.to_owned()),
        (
            "upstreams",
            r#"{"name":"carrier","root_url":"https://ript.example/.well-known/ript","trunk_group":"tg-1","auth":{"kind":"token","token":"up-token-secret-77"},"media_mode":"auto"}"#.to_owned(),
        ),
        (
            "hosted-tgs",
            r#"{"tenant":"acme","name":"acme-main","vouched_numbers":["+1408555*"],"destination_pattern":"*","advertisement":{"media":["pcmu"]},"customer_tgs":[]}"#.to_owned(),
        ),
        (
            "numbers",
            r#"{"tenant":"acme","first":"+14085550100","last":"+14085550199","owner":{"kind":"hosted_tg","id":"acme-main"},"vouch":true}"#.to_owned(),
        ),
        (
            "routes",
            r#"{"name":"pbx to carrier","priority":10,"source":{"kind":"sip_peer","id":"pbx-main"},"destination_pattern":"+1*","targets":[{"endpoint":{"kind":"upstream","id":"carrier"},"priority":0,"weight":100}]}"#.to_owned(),
        ),
    ];
    for (path, body) in &bodies {
        let (status, text) = http(
            aa,
            "POST",
            &format!("/api/v1/{path}"),
            Some(token_a.trim()),
            Some(body),
        );
        assert_eq!(status, 201, "{path}: {text}");
    }
    let count = |admin, token: &str, path: &str| {
        let (status, text) = http(admin, "GET", &format!("/api/v1/{path}"), Some(token), None);
        assert_eq!(status, 200, "{path}: {text}");
        assert!(!text.contains("secret"), "{path} leaked a secret: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["items"].as_array().map_or(0, Vec::len)
    };
    for (path, _) in &bodies {
        assert_eq!(count(ab, token_b.trim(), path), 1, "instance B sees {path}");
    }
    let dir = a.dir.clone();
    a.keep_dir = true;
    drop(a);
    let a = start_in(dir, &env);
    for (path, _) in &bodies {
        assert_eq!(
            count(a.admin.unwrap(), token_a.trim(), path),
            1,
            "{path} after a restart"
        );
    }
    let _ = std::fs::remove_dir_all(&a.dir);
    let _ = std::fs::remove_file(&key);
}
