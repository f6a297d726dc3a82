//! Per-job callback tokens: 256 random bits as hex. Only the SHA-256 is
//! stored; comparing hashes in constant time keeps timing from telling an
//! attacker how much of a guess was right.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh token and its hash.
pub fn new_token() -> Result<(String, [u8; 32]), getrandom::Error> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)?;
    let token = crate::store::hex(&raw);
    let hash = hash(&token);
    Ok((token, hash))
}

/// A hash that no known token has: what a job carries until it is
/// provisioned and gets its real token.
pub fn unusable_hash() -> [u8; 32] {
    hash(&format!("unusable-{}", uuid::Uuid::new_v4()))
}

/// SHA-256 of the token's text.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `token` is the one whose hash is `expected`, in constant time.
pub fn matches(token: &str, expected: &[u8; 32]) -> bool {
    hash(token).ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_match_only_their_hash() {
        let (a, ha) = new_token().unwrap();
        let (b, hb) = new_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(matches(&a, &ha));
        assert!(!matches(&a, &hb));
        assert!(!matches("", &ha));
    }
}
