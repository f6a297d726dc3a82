//! The gateway's own certificate authority, for the hosts where it injects
//! a credential (`DELEGATE_EGRESS_INJECT`) and so must read the requests.
//!
//! The key is made at the first start that needs it and kept in the data
//! directory (`egress-ca.key`, 0600); it never leaves the host. The CA's
//! certificate is made anew at every start from that key, with X.509 name
//! constraints permitting only the injection hosts: a guest that trusts it
//! (see `spec`) trusts it for those hosts alone, whatever else the key
//! might sign. Leaf certificates are made per host on first use and kept.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, GeneralSubtree, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The key's file name in the data directory.
pub const KEY_FILE: &str = "egress-ca.key";

/// Why the CA or a leaf could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing the key file.
    #[error("egress CA key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file is readable by others than the host's user.
    #[error("egress CA key {path}: mode {mode:04o} lets other users read it; it must be 0600")]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A certificate or key operation.
    #[error("egress CA: {0}")]
    Cert(#[from] rcgen::Error),
    /// The TLS server configuration for a leaf.
    #[error("egress CA: TLS setup for {host}: {source}")]
    Tls {
        /// The host.
        host: String,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
}

/// The CA: its certificate (for guests) and what signs leaves.
pub struct InjectCa {
    /// The CA certificate, PEM: what guests add to their trust store.
    pub cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl std::fmt::Debug for InjectCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectCa").finish_non_exhaustive()
    }
}

impl InjectCa {
    /// Loads the key from `data_dir` (or makes it) and issues the CA
    /// certificate for `hosts`.
    pub fn load_or_create(data_dir: &Path, hosts: &[String]) -> Result<InjectCa, CaError> {
        let key = load_or_create_key(&data_dir.join(KEY_FILE))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "delegate egress gateway CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: hosts
                .iter()
                .map(|h| GeneralSubtree::DnsName(h.clone()))
                .collect(),
            excluded_subtrees: Vec::new(),
        });
        let cert = params.self_signed(&key)?;
        Ok(InjectCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS server configuration that presents `host`'s leaf (made on
    /// first use) with the CA certificate behind it; HTTP/1.1 only.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let host = host.to_ascii_lowercase();
        if let Some(c) = self
            .leaves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&host)
        {
            return Ok(c.clone());
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![host.clone()])?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, host.as_str());
        let leaf = params.signed_by(&key, &self.issuer)?;
        let tls_err = |source| CaError::Tls {
            host: host.clone(),
            source,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(tls_err)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        self.leaves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host, config.clone());
        Ok(config)
    }
}

/// The key at `path`: read when it exists (refused unless only its owner
/// can read it), else made and written 0600 without ever being readable
/// by others.
fn load_or_create_key(path: &Path) -> Result<KeyPair, CaError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(CaError::Exposed {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            Ok(KeyPair::from_pem(&pem)?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(key.serialize_pem().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["git.example".to_string()];
        let a = InjectCa::load_or_create(dir.path(), &hosts).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = std::fs::read(&path).unwrap();
        let b = InjectCa::load_or_create(dir.path(), &hosts).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), key, "the key is kept");
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!b.cert_pem.contains("PRIVATE KEY"));
        assert!(a.server_config("git.example").is_ok());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            InjectCa::load_or_create(dir.path(), &hosts),
            Err(CaError::Exposed { .. })
        ));
    }

    #[tokio::test]
    async fn a_client_trusting_the_ca_trusts_it_for_its_hosts_alone() {
        use rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let ca = InjectCa::load_or_create(dir.path(), &["git.example".to_string()]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = tokio_rustls::TlsConnector::from(Arc::new(client));
        // The key could sign a leaf for any name; the name constraints
        // make a client refuse all but the injection hosts.
        for (host, trusted) in [("git.example", true), ("other.example", false)] {
            let (a, b) = tokio::io::duplex(64 * 1024);
            let server = tokio_rustls::TlsAcceptor::from(ca.server_config(host).unwrap());
            let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
            let (_, c) = tokio::join!(server.accept(a), client.connect(name, b));
            assert_eq!(c.is_ok(), trusted, "{host}: {:?}", c.err());
        }
    }
}
