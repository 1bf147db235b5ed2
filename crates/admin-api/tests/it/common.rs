//! A fresh database per test (Postgres from DATABASE_URL and a SQLite file, as the store's
//! tests do), an admin API served on 127.0.0.1, a small HTTP/1.1 client, and captured logs.

use admin_api::{AdminAuth, AdminState, Metrics};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use store::Store;

pub const TOKEN: &str = "test-admin-token-0123456789abcdef";

pub use store::testing::{Backend, Db};

pub async fn both<F, Fut>(body: F)
where
    F: Fn(Db) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    store::testing::both("adminapi_t", body).await
}

/// `both_dbs!(name, |db| { ... })` declares a test running the body on both databases.
#[macro_export]
macro_rules! both_dbs {
    ($name:ident, |$db:ident| $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $crate::common::capture_logs();
            $crate::common::both(|$db: $crate::common::Db| async move $body).await
        }
    };
}

/// Everything any test logged (all levels), for checking that secrets never reach a log.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().map(|b| b.clone()).unwrap_or_default())
        .into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test binary) a global subscriber recording every event at TRACE into
/// the shared buffer.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let buf = log_buffer().clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || BufWriter(buf.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// An admin API served on 127.0.0.1 by a spawned task.
#[derive(Debug, Clone)]
pub struct Server {
    pub addr: SocketAddr,
    pub metrics: Metrics,
}

pub async fn serve_state(state: AdminState) -> Server {
    let metrics = state.metrics().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(admin_api::serve(listener, admin_api::router(state)));
    Server { addr, metrics }
}

pub fn auth() -> AdminAuth {
    AdminAuth::none()
        .with_static_token(TOKEN)
        .expect("static token")
}

pub async fn serve(store: Store) -> Server {
    serve_state(AdminState::new(store, auth(), Metrics::new())).await
}

/// A response, with the body as text and (when it parses) JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem document with `status`, returning its `field`.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Option<String> {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(self.content_type(), "application/problem+json", "{self:?}");
        assert_eq!(self.json["status"], status, "{}", self.text);
        assert!(self.json["type"].is_string(), "{}", self.text);
        assert!(self.json["title"].is_string(), "{}", self.text);
        self.json["field"].as_str().map(str::to_owned)
    }
}

impl Server {
    /// One request on a new connection, with the admin token.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|v| v.to_string().into_bytes());
        self.raw(
            method,
            path,
            &[("authorization", &format!("Bearer {TOKEN}"))],
            body.map(|b| ("application/json", b)),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    /// Writes `head` (request line and headers, without the blank line) and `body` on a raw
    /// connection, and returns the status line and everything up to the end of the reply's
    /// head (for bodies a well-behaved client library would not send).
    pub async fn raw_tcp(&self, head: &str, body: &[u8]) -> Reply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let head = format!("{head}\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        stream.write_all(head.as_bytes()).await.expect("write head");
        // The server may answer (and close) before the body is all written.
        let _ = stream.write_all(body).await;
        let mut out = Vec::new();
        // Bounded so a server that never answers fails the test instead of hanging it.
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            stream.read_to_end(&mut out),
        )
        .await;
        assert!(
            read.is_ok(),
            "no complete reply within 20 s: {:?}",
            String::from_utf8_lossy(&out)
        );
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut headers = http::HeaderMap::new();
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':')
                && let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.trim().as_bytes()),
                    http::HeaderValue::from_str(v.trim()),
                )
            {
                headers.insert(k, v);
            }
        }
        // A chunked reply's body is framed; the JSON object is between the first '{' and
        // the last '}'.
        let json_text = match (body.find('{'), body.rfind('}')) {
            (Some(a), Some(b)) if a < b => &body[a..=b],
            _ => "",
        };
        Reply {
            status,
            headers,
            json: serde_json::from_str(json_text).unwrap_or(Value::Null),
            text: body.to_owned(),
        }
    }

    /// One request with exactly the given headers and body (`(content type, bytes)`).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let bytes = match body {
            Some((ct, b)) => {
                req = req.header("content-type", ct);
                Bytes::from(b)
            }
            None => Bytes::new(),
        };
        let res = sender
            .send_request(req.body(Full::new(bytes)).expect("request"))
            .await
            .expect("response");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).into_owned();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }
}
