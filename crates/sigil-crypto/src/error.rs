/// Cryptographic failures. Messages never include key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("decryption failed: wrong master key or corrupted data")]
    Decrypt,
    #[error("malformed key material: {0}")]
    KeyFormat(&'static str),
    #[error("invalid encoding: {0}")]
    Encoding(&'static str),
    #[error("the system random generator failed")]
    Random,
    #[error("signing failed")]
    Sign,
}
