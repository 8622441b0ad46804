//! HTTPS: a self-signed certificate made on first start (rcgen), served with
//! rustls (ring provider, no C build).

use crate::{auth, WebConfig, WebError};
use std::path::Path;
use std::sync::Arc;

pub const CERT_FILE: &str = "tls-cert.pem";
pub const KEY_FILE: &str = "tls-key.pem";

/// Load the configured or generated certificate, making one if missing.
pub fn server_config(
    config: &WebConfig,
    state_dir: &Path,
) -> Result<Arc<rustls::ServerConfig>, WebError> {
    let (cert_path, key_path) = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => {
            let c = state_dir.join(CERT_FILE);
            let k = state_dir.join(KEY_FILE);
            if !c.exists() || !k.exists() {
                generate_self_signed(state_dir)?;
            }
            (c, k)
        }
        _ => {
            return Err(WebError::Tls(
                "[web] tls_cert and tls_key must be set together".into(),
            ))
        }
    };
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| WebError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| WebError::Tls(format!("{}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(WebError::Tls(format!(
            "{}: no certificate in the file",
            cert_path.display()
        )));
    }
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| WebError::Tls(format!("{}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| WebError::Tls(format!("{}: {e}", cert_path.display())))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A certificate for the names a phone may use to reach the car.
pub fn generate_self_signed(state_dir: &Path) -> Result<(), WebError> {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut names = vec!["localhost".to_string(), "deepracer.local".to_string()];
    if !host.is_empty() {
        names.push(host.clone());
        names.push(format!("{host}.local"));
    }
    names.push("127.0.0.1".into());
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| WebError::Tls(e.to_string()))?;
    auth::create_private_dir(state_dir)?;
    auth::write_private_atomic(
        &state_dir.join(KEY_FILE),
        certified.signing_key.serialize_pem().as_bytes(),
    )?;
    auth::write_private_atomic(&state_dir.join(CERT_FILE), certified.cert.pem().as_bytes())?;
    tracing::info!(
        "made a self-signed TLS certificate in {}",
        state_dir.display()
    );
    Ok(())
}
