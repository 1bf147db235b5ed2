//! TLS configuration (rustls with the ring provider; no OpenSSL, no aws-lc).
//!
//! SIP over TLS (RFC 3261 §26.2, RFC 5630) offers TLS 1.2 and 1.3: many deployed PBXs and
//! SBCs still stop at 1.2. Clients authenticate servers only (no client certificates).

use crate::Error;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Where Debian and its derivatives keep the system trust bundle.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::Certificate("unreadable certificate pem"))
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1).
pub fn server_config_from_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let chain = certs_from_pem(chain_pem)?;
    if chain.is_empty() {
        return Err(Error::Certificate("no certificate in the chain pem"));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|_| Error::Certificate("unreadable key pem"))?
        .ok_or(Error::Certificate("no private key in the key pem"))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(cfg))
}

/// [`server_config_from_pem`] reading the two files.
pub fn server_config_from_files(
    chain: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    server_config_from_pem(&std::fs::read(chain)?, &std::fs::read(key)?)
}

/// A client configuration trusting the CAs (or pinned certificates) of `ca_pem` and, when
/// `system_roots` is set, the system bundle [`SYSTEM_CA_BUNDLE`]. Trusting nothing is refused.
pub fn client_config(
    ca_pem: Option<&[u8]>,
    system_roots: bool,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        for c in certs_from_pem(pem)? {
            roots.add(c)?;
        }
    }
    if system_roots {
        let bundle = std::fs::read(SYSTEM_CA_BUNDLE)?;
        // A system bundle may hold certificates webpki cannot use; skip those, keep the rest.
        let _ = roots.add_parsable_certificates(certs_from_pem(&bundle)?);
    }
    if roots.is_empty() {
        return Err(Error::Certificate("no trusted certificate configured"));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// [`client_config`] reading the CA bundle from a file.
pub fn client_config_from_file(
    ca: Option<&Path>,
    system_roots: bool,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let pem = ca.map(std::fs::read).transpose()?;
    client_config(pem.as_deref(), system_roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_and_garbage_pem() {
        assert!(matches!(
            server_config_from_pem(b"", b""),
            Err(Error::Certificate(_))
        ));
        assert!(matches!(
            client_config(Some(b"not pem"), false),
            Err(Error::Certificate(_))
        ));
        assert!(client_config(None, false).is_err());
    }

    #[test]
    fn builds_from_a_generated_certificate() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = ck.cert.pem();
        let key = ck.signing_key.serialize_pem();
        server_config_from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        client_config(Some(cert.as_bytes()), false).unwrap();
        // The key alone is no chain.
        assert!(server_config_from_pem(key.as_bytes(), key.as_bytes()).is_err());
    }
}
