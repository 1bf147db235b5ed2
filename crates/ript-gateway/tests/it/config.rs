//! `run`'s configuration as an operator meets it: the sample file, a file overridden by the
//! environment, and bad configurations refused before anything starts.

use super::*;
use std::io::Read;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/gateway.toml");

/// Every variable `run` reads: children must not pick up the developer's own settings.
const RUN_ENV: &[&str] = &[
    "RIPT_CONFIG",
    "RIPT_DATA_DIR",
    "DATABASE_URL",
    "RIPT_SECRET_KEY_FILE",
    "RIPT_LOG",
    "RIPT_HTTP3_LISTEN",
    "RIPT_AUTHORITY",
    "RIPT_TOKEN",
    "RIPT_SIP_LISTEN",
    "RIPT_SIP_ALLOW",
    "RIPT_SIP_USERS",
    "RIPT_SIP_DIGEST_ALGORITHMS",
    "RIPT_SIP_REGISTER",
    "RIPT_SIP_TLS_CERT",
    "RIPT_SIP_TLS_KEY",
    "RIPT_SIP_TLS_CA",
    "RIPT_ADMIN_LISTEN",
    "RIPT_ADMIN_TOKEN",
];

/// A configuration file removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "ript-gw-cfg-{}-{}-{name}.toml",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `ript-gateway run` expecting it to refuse its configuration: returns stderr after
/// asserting exit code 1 and that the data directory was never created (nothing started).
fn refused(envs: &[(&str, &str)]) -> String {
    let dir = std::env::temp_dir().join(format!(
        "ript-gw-cfg-refused-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in RUN_ENV {
        cmd.env_remove(v);
    }
    cmd.envs(envs.iter().copied());
    let mut child = cmd.spawn().unwrap();
    // A gateway that wrongly accepts the configuration announces its listener instead of
    // exiting: stop it rather than wait forever.
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if line.unwrap().starts_with("ript listening on ") {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            panic!("the gateway started with {envs:?}");
        }
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        !dir.exists(),
        "refused only after creating {}",
        dir.display()
    );
    err
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_sample_file_starts_the_gateway() {
    // The sample's listeners are overridden by start_with's flags and variables (ephemeral
    // ports); everything else comes from the file.
    let r = start_with(&[("RIPT_CONFIG", SAMPLE)]);
    let (code, out, err) = probe(&r, TOKEN, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    // First start: the admin token and the key for secrets at rest exist, private.
    let token = r.dir.join("admin-token");
    assert!(std::fs::read_to_string(&token).unwrap().len() >= 16);
    assert_eq!(mode(&token), 0o600);
    let key = r.dir.join("secret.key");
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn the_environment_overrides_the_file() {
    let file = TempFile::new(
        "override",
        "[ript]\n\
         token = \"token-from-the-file-0123456789\"\n\
         [sip]\n\
         listen = \"udp:127.0.0.1:0\"\n\
         allow = [\"192.0.2.0/24\"]\n",
    );
    // start_with sets RIPT_TOKEN and RIPT_SIP_LISTEN (udp and tcp): both must win, and
    // start_with itself fails without the tcp listener only the environment asks for.
    let r = start_with(&[("RIPT_CONFIG", file.path())]);
    let (code, out, err) = probe(&r, TOKEN, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, _, err) = probe(&r, "token-from-the-file-0123456789", &[]);
    assert_eq!(code, 3, "the file's token was used: {err}");
    // What the environment leaves alone comes from the file: loopback is not allow-listed
    // and no digest users exist, so a REGISTER from here is forbidden.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = sock.local_addr().unwrap();
    let req = format!(
        "REGISTER sip:{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-cfg-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:pbx@{target}>;tag=cfg-1\r\n\
         To: <sip:pbx@{target}>\r\n\
         Call-ID: cfg-1\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:pbx@{local}>\r\n\
         Content-Length: 0\r\n\r\n",
        target = r.sip_udp
    );
    sock.send_to(req.as_bytes(), r.sip_udp).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("no response within 5 s");
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("SIP/2.0 403"), "{resp}");
}

#[test]
fn bad_configurations_exit_1_naming_the_key() {
    let typo = TempFile::new("typo", "[sip]\nlissen = \"udp:127.0.0.1:0\"\n");
    let err = refused(&[("RIPT_CONFIG", typo.path())]);
    assert!(err.contains("error: sip.lissen: unknown key"), "{err}");
    assert!(err.contains(typo.path()), "{err}");

    let listener = TempFile::new("listener", "[sip]\nlisten = [\"udp:nowhere\"]\n");
    let err = refused(&[("RIPT_CONFIG", listener.path())]);
    assert!(
        err.contains("error: sip.listen: \"udp:nowhere\" is not an address"),
        "{err}"
    );
    let err = refused(&[("RIPT_ADMIN_LISTEN", "localhost:8081")]);
    assert!(err.contains("error: admin.listen: "), "{err}");
    assert!(err.contains("RIPT_ADMIN_LISTEN"), "{err}");

    let err = refused(&[("DATABASE_URL", "mysql://gw:hunter2@db.example.net/gw")]);
    assert!(err.contains("error: database_url: "), "{err}");
    assert!(err.contains("sqlite:// or postgres://"), "{err}");
    assert!(!err.contains("hunter2"), "the password was printed: {err}");
}

/// `migrate` applies the schema to SQLite (the default, under the data directory) and to the
/// Postgres of `DATABASE_URL`, twice each (the second run finds nothing to do).
#[test]
fn migrate_applies_the_schema_to_sqlite_and_postgres() {
    let dir = std::env::temp_dir().join(format!("ript-gw-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pg = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    for url in [None, Some(pg.as_str())] {
        for _ in 0..2 {
            let mut cmd = Command::new(BIN);
            cmd.args(["migrate", "--data-dir"]).arg(&dir);
            cmd.env_remove("DATABASE_URL");
            if let Some(u) = url {
                cmd.env("DATABASE_URL", u);
            }
            let out = cmd.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{url:?}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("migrations applied"), "{stdout}");
        }
    }
    assert!(dir.join("gateway.db").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
