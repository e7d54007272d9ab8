//! TLS for the sync API, both ends: the certificate `keeper run` serves
//! (`SYNC_API_TLS_CERT`, `SYNC_API_TLS_KEY`) and the roots `keeper pull`
//! trusts (the system's, plus `--ca-cert`).
//!
//! Everything uses rustls with the ring provider, passed in explicitly:
//! aws-lc-rs (rustls' default) needs cmake and breaks the Windows
//! cross-build, and an explicit provider means no process-wide default has
//! to be installed (serenity's rustls lives in the same process).
//!
//! Certificate errors are turned into words here ([`explain_handshake`]):
//! rustls' own ("invalid peer certificate: UnknownIssuer") says what is
//! wrong, not what to do about it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, ServerConfig};

use crate::config::Settings;

/// The one crypto provider keeper uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS setting keeper cannot use. Each names the setting (and the `.env`
/// file it came from) and the file, so the operator knows what to fix; at
/// start-up nothing has been opened or written yet.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "{set} is set but {missing} is not: to serve the sync API over HTTPS set both (the certificate \
         and its private key, PEM files); to serve plain HTTP (behind a platform's TLS edge) set neither"
    )]
    HalfSet { set: String, missing: &'static str },
    #[error("{setting} = {path:?}: cannot read the file: {source}")]
    Unreadable {
        setting: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting} = {path:?}: {reason}")]
    Invalid {
        setting: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{} = {:?} and {} = {:?} do not go together: {reason}; give the certificate and the private key it \
         was issued for",
        .pair.cert_setting, .pair.cert, .pair.key_setting, .pair.key
    )]
    Mismatch { pair: Box<PemPair>, reason: String },
}

/// The certificate and key files of a [`TlsError::Mismatch`], with the
/// settings that named them. Boxed there: two paths and three strings would
/// make every `Result` carrying a `TlsError` large (on Windows a path is
/// bigger than on Unix, and clippy's `result_large_err` says so).
#[derive(Debug)]
pub struct PemPair {
    pub cert_setting: String,
    pub cert: PathBuf,
    pub key_setting: String,
    pub key: PathBuf,
}

/// The sync API's TLS configuration: its certificate and key, checked.
pub type ServerTls = Arc<ServerConfig>;

/// What `keeper run` serves the API with: TLS from the two PEM files when
/// both are set, plain HTTP when neither is.
pub fn server_config(settings: &Settings) -> Result<Option<ServerTls>, TlsError> {
    let describe = |name: &str| settings.environment.describe(name);
    let (cert_path, key_path) = match (&settings.sync_api_tls_cert, &settings.sync_api_tls_key) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(TlsError::HalfSet {
                set: describe(CERT_VAR),
                missing: KEY_VAR,
            });
        }
        (None, Some(_)) => {
            return Err(TlsError::HalfSet {
                set: describe(KEY_VAR),
                missing: CERT_VAR,
            });
        }
        (Some(cert), Some(key)) => (cert, key),
    };
    let chain = read_certificates(cert_path, &describe(CERT_VAR))?;
    let key_bytes = read(key_path, &describe(KEY_VAR))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Invalid {
        setting: describe(KEY_VAR),
        path: key_path.clone(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key in it".to_owned(),
            other => format!("not a valid PEM file ({other})"),
        } + "; expected a PEM file with a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block",
    })?;
    let mismatch = |reason: String| TlsError::Mismatch {
        pair: Box::new(PemPair {
            cert_setting: describe(CERT_VAR),
            cert: cert_path.clone(),
            key_setting: describe(KEY_VAR),
            key: key_path.clone(),
        }),
        reason,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| mismatch(e.to_string()))?;
    // The API serves HTTP/2 and HTTP/1.1 on the same port.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

const CERT_VAR: &str = "SYNC_API_TLS_CERT";
const KEY_VAR: &str = "SYNC_API_TLS_KEY";

/// The roots `keeper pull` trusts for an https:// bot host: the system's
/// (Windows' and macOS' certificate stores, Linux' CA bundle) and the CAs in
/// `extra` (`--ca-cert`), for a bot host whose certificate is self-signed or
/// from a private CA.
pub fn client_roots(extra: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::debug!(%error, "a system root certificate could not be loaded");
    }
    let mut roots = system.certs;
    if roots.is_empty() {
        tracing::warn!(
            "no trusted root certificates found on this system (on Linux: install the ca-certificates \
             package); only --ca-cert is trusted"
        );
    }
    if let Some(path) = extra {
        roots.extend(read_certificates(path, CA_SETTING)?);
    }
    Ok(roots)
}

/// How the puller's CA file is named in messages.
const CA_SETTING: &str = "--ca-cert (SYNC_CA_CERT)";

fn read(path: &Path, setting: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        setting: setting.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// Every CERTIFICATE block of a PEM file; none at all is an error.
fn read_certificates(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, setting)?;
    let invalid = |reason: String| TlsError::Invalid {
        setting: setting.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a valid PEM file ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(
            "no certificate in it; expected a PEM file with one or more -----BEGIN CERTIFICATE----- blocks".into(),
        ));
    }
    Ok(certs)
}

/// What a failed TLS handshake with `host` means, in words a user can act on.
pub fn explain_handshake(error: &rustls::Error, host: &str) -> String {
    match error {
        rustls::Error::InvalidCertificate(cert) => explain_certificate(cert, host),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("{host} did not answer in TLS ({error}): if it serves plain HTTP, use http:// in --from")
        }
        rustls::Error::AlertReceived(alert) => {
            format!("{host} refused the TLS handshake (alert {alert:?}): see the bot host's log")
        }
        other => format!("TLS with {host} failed: {other}"),
    }
}

fn explain_certificate(error: &CertificateError, host: &str) -> String {
    match error {
        CertificateError::UnknownIssuer => format!(
            "the certificate of {host} is not trusted (UnknownIssuer): if it is self-signed or from a private \
             CA, pass its CA with --ca-cert FILE"
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
            "the certificate of {host} is not issued for that name ({error}): use in --from the name the \
             certificate was issued for, or issue one that names {host}"
        ),
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => format!(
            "the certificate of {host} is not valid now ({error}): renew it on the bot host, or check this \
             machine's clock"
        ),
        CertificateError::BadSignature => format!(
            "the certificate of {host} is not signed by the CA it names (BadSignature): if you passed --ca-cert, \
             it is another CA than the one that issued this certificate"
        ),
        other => format!("the certificate of {host} was refused ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_say_what_to_do() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(
            explain_handshake(&unknown, "127.0.0.1"),
            "the certificate of 127.0.0.1 is not trusted (UnknownIssuer): if it is self-signed or from a \
             private CA, pass its CA with --ca-cert FILE"
        );
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert!(explain_handshake(&expired, "h").contains("renew it"));
        let plain = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert!(explain_handshake(&plain, "h").contains("use http://"));
    }
}
