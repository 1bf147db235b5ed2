//! TLS and QUIC endpoint construction (ript-profile §1: HTTP/3 only, TLS 1.3, ALPN `h3`).

use crate::Error;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// UDP socket buffers (the issue asks for 4 MiB; Linux may cap at `net.core.*mem_max`).
pub const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// A certificate chain and its key.
#[derive(Debug, Clone)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    /// A self-signed development certificate for `names` (peers must pin it explicitly).
    pub fn self_signed(names: &[&str]) -> Result<Self, Error> {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|_| Error::Certificate("cannot generate a self-signed certificate"))?;
        Ok(Identity {
            chain: vec![ck.cert.der().clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                ck.signing_key.serialize_der(),
            ))),
        })
    }

    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<_, _>>()
            .map_err(|_| Error::Certificate("certificate pem"))?;
        if chain.is_empty() {
            return Err(Error::Certificate("no certificate in pem"));
        }
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|_| Error::Certificate("key pem"))?
            .ok_or(Error::Certificate("no private key in pem"))?;
        Ok(Identity {
            chain,
            key: Arc::new(key),
        })
    }

    /// PEM of the private key (PKCS#8), for persisting a generated identity.
    pub fn key_pem(&self) -> String {
        match self.key.as_ref() {
            PrivateKeyDer::Pkcs8(k) => pem_encode("PRIVATE KEY", k.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(k) => pem_encode("EC PRIVATE KEY", k.secret_sec1_der()),
            PrivateKeyDer::Pkcs1(k) => pem_encode("RSA PRIVATE KEY", k.secret_pkcs1_der()),
            _ => String::new(),
        }
    }

    /// PEM of the leaf certificate, for a client to pin.
    pub fn cert_pem(&self) -> String {
        self.chain
            .first()
            .map(|c| pem_encode("CERTIFICATE", c))
            .unwrap_or_default()
    }
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Where a client's trust comes from (ript-profile §1: system roots or a configured bundle;
/// a self-signed dev certificate must be pinned explicitly).
#[derive(Debug, Clone)]
pub enum Trust {
    /// Trust exactly these certificates / CAs (PEM bundle or pinned dev certificate).
    Certificates(Vec<CertificateDer<'static>>),
}

impl Trust {
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<_, _>>()
            .map_err(|_| Error::Certificate("trust bundle pem"))?;
        if certs.is_empty() {
            return Err(Error::Certificate("no certificate in trust bundle"));
        }
        Ok(Trust::Certificates(certs))
    }
}

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Duration::from_secs(30).try_into().ok())
        .keep_alive_interval(Some(Duration::from_secs(5)))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(4096))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(16))
        .datagram_receive_buffer_size(Some(SOCKET_BUFFER))
        .datagram_send_buffer_size(SOCKET_BUFFER);
    t
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn server_config(id: &Identity) -> Result<quinn::ServerConfig, Error> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), id.key.clone_key())?;
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic =
        QuicServerConfig::try_from(tls).map_err(|_| Error::Certificate("quic tls config"))?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
    sc.transport_config(Arc::new(transport()));
    Ok(sc)
}

pub fn client_config(trust: &Trust) -> Result<quinn::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        Trust::Certificates(certs) => {
            for c in certs {
                roots.add(c.clone())?;
            }
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic =
        QuicClientConfig::try_from(tls).map_err(|_| Error::Certificate("quic tls config"))?;
    let mut cc = quinn::ClientConfig::new(Arc::new(quic));
    cc.transport_config(Arc::new(transport()));
    Ok(cc)
}

/// A quinn endpoint on a socket with enlarged buffers.
pub fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: an unprivileged process may be capped lower; quinn works either way.
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    if addr.is_ipv6() {
        let _ = sock.set_only_v6(false);
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    let ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        sock.into(),
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok(ep)
}
