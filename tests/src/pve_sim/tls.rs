//! HTTPS like a PVE node: a cluster CA signs the node's certificate (for
//! `localhost` and 127.0.0.1), so clients can trust the CA file, pin the
//! leaf fingerprint, or fail against neither.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// The certificates of one simulated cluster.
pub struct SimCerts {
    /// The CA certificate, PEM (what `PROXMOX_CA_FILE` would hold).
    pub ca_pem: String,
    /// SHA-256 of the node certificate (what `PROXMOX_FINGERPRINT` pins).
    pub leaf_fingerprint: [u8; 32],
    /// The server configuration.
    pub server: Arc<rustls::ServerConfig>,
}

/// Makes a fresh CA and node certificate.
pub fn generate() -> Result<SimCerts, String> {
    let err = |e: rcgen::Error| e.to_string();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.distinguished_name.push(
        DnType::CommonName,
        "Proxmox Virtual Environment (simulated)",
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(err)?;

    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "pve1.sim");
    let leaf_key = KeyPair::generate().map_err(err)?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca).map_err(err)?;
    let leaf_der: CertificateDer<'static> = leaf.der().clone();
    let fp: [u8; 32] = Sha256::digest(leaf_der.as_ref()).into();

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![leaf_der, ca.der().clone()], key)
        .map_err(|e| e.to_string())?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(SimCerts {
        ca_pem: ca.pem(),
        leaf_fingerprint: fp,
        server: Arc::new(server),
    })
}
