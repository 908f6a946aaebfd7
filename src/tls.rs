//! TLS for the listeners: rustls server configurations built from the PEM files of `[mqtt.tls]`
//! and `[nats.tls]`, and the identity of a verified client certificate.
//!
//! Owns no sockets: `shard::stream` runs the handshakes and the records. The configurations are
//! built once at startup (a bad file is a startup error, not a failed connection) and shared by
//! every shard through `Identity`, behind `Arc`, read-only.

use crate::config::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::sync::Arc;

/// One listener's TLS settings, ready for handshakes.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The rustls configuration (certificate, key, client verifier, protocol versions).
    pub config: Arc<ServerConfig>,
    /// Client certificates are verified (NATS INFO `tls_verify`).
    pub verify_clients: bool,
}

impl ServerTls {
    /// Reads the certificate, key and client CA files and builds the configuration. The crypto
    /// provider is named here (aws-lc-rs, DECISIONS.md §4) rather than left to rustls' process
    /// default, which is ambiguous when another crate in the build enables ring too.
    pub fn from_files(files: &TlsFiles) -> Result<ServerTls, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = read_certificates(&files.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| {
            format!("cannot read a private key from {}: {e}", files.key_file.display())
        })?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match &files.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for certificate in read_certificates(path)? {
                    roots.add(certificate).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if files.client_cert_required {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier.build().map_err(|e| format!("{}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            format!(
                "{} and {} do not make a usable certificate: {e}",
                files.cert_file.display(),
                files.key_file.display()
            )
        })?;
        // Neither protocol negotiates ALPN; a client that offers some (e.g. "mqtt") still
        // connects, as rustls ignores offers when the server lists none.
        config.alpn_protocols = Vec::new();
        Ok(ServerTls { config: Arc::new(config), verify_clients: files.client_ca_file.is_some() })
    }
}

/// The name a verified client certificate stands for: the subject's common name, else its first
/// DNS or email subject alternative name. `None` if the certificate has neither (or does not
/// parse, which cannot happen for one webpki has verified).
pub fn certificate_identity(certificate: &[u8]) -> Option<Box<str>> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let subject = parsed.subject();
    if let Some(cn) = subject.iter_common_name().find_map(|cn| cn.as_str().ok()) {
        return Some(cn.into());
    }
    let names = parsed.subject_alternative_name().ok().flatten()?;
    names.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(name) | GeneralName::RFC822Name(name) => Some((*name).into()),
        _ => None,
    })
}

fn read_certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(chain)
}
