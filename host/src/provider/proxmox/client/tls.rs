//! How the API's certificate is trusted. PVE nodes mostly run with the
//! cluster's self-signed CA, so besides the system roots we accept a CA file
//! and pinned SHA-256 fingerprints of the node's certificate (what the
//! web UI shows under Certificates, and `/nodes` reports as
//! `ssl_fingerprint`). A pin is checked against the leaf certificate alone:
//! name and expiry do not matter once the exact certificate is known, which
//! is how PVE's own tools treat fingerprints. Skipping verification is
//! possible only through `PROXMOX_INSECURE=1`, and said loudly.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::error::PveError;
use crate::provider::proxmox::settings::{TlsSettings, format_fingerprint};

/// Builds the rustls configuration for the API client.
pub fn client_config(tls: &TlsSettings) -> Result<rustls::ClientConfig, PveError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = if tls.insecure || (tls.ca_pem.is_none() && !tls.fingerprints.is_empty()) {
        None
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| PveError::Tls(format!("CA file: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| PveError::Tls(format!("CA file: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(PveError::Tls("CA file holds no certificate".into()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| PveError::Tls(e.to_string()))?,
        )
    };
    let verifier = Arc::new(PveVerifier {
        webpki,
        pins: tls.fingerprints.clone(),
        insecure: tls.insecure,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PveError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

/// The SHA-256 fingerprint of a DER certificate.
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

#[derive(Debug)]
struct PveVerifier {
    /// Chain verification against the CA file or system roots; `None` when
    /// only pins (or nothing, with `insecure`) apply.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<[u8; 32]>,
    insecure: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PveVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let seen = fingerprint(end_entity.as_ref());
        if self.pins.contains(&seen) {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| {
                    if self.pins.is_empty() {
                        e
                    } else {
                        rustls::Error::General(format!(
                            "{e}; and its fingerprint {} is not pinned",
                            format_fingerprint(&seen)
                        ))
                    }
                }),
            None => Err(rustls::Error::General(format!(
                "server certificate fingerprint {} matches none of PROXMOX_FINGERPRINT",
                format_fingerprint(&seen)
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
