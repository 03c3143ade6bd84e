//! Envelope encryption: each sealed blob has its own data key, wrapped by the master key.
//!
//! A fresh data key per blob means the master key only ever encrypts 32-byte keys, and re-wrapping
//! under a new master key later touches only those. AES-256-GCM with random 96-bit nonces; the
//! caller's context string is bound as AAD to both layers so a blob cannot be moved to another row.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::{CryptoError, random_bytes};

const VERSION: u8 = 1;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// The root key-encryption key. Zeroed on drop; never printed.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

impl MasterKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(k.as_mut()).map_err(|_| CryptoError::Random)?;
        Ok(Self(k))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::KeyFormat("master key must be 32 bytes"))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// Parses the base64 (standard or URL-safe) text form used in files and `SIGIL_MASTER_KEY`.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        use base64::Engine;
        let t = text.trim();
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
                .map_err(|_| CryptoError::KeyFormat("master key must be 32 bytes of base64"))?,
        );
        Self::from_bytes(&bytes)
    }

    /// The text form written to the master key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        use base64::Engine;
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0.as_ref()))
    }

    /// Derives a purpose-specific subkey (HMAC-SHA256 as a PRF), so one master key can key
    /// unrelated uses without them ever sharing key material.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.0.as_ref());
        let tag = aws_lc_rs::hmac::sign(&key, purpose.as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Encrypts `plaintext` under a fresh data key, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<SealedBlob, CryptoError> {
        let dek = Zeroizing::new(random_bytes::<KEY_LEN>()?);
        let dek_nonce = random_bytes::<NONCE_LEN>()?;
        let data_nonce = random_bytes::<NONCE_LEN>()?;

        let mut wrapped = dek.to_vec();
        aead(self.0.as_ref())?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(dek_nonce),
                Aad::from(context.as_bytes()),
                &mut wrapped,
            )
            .map_err(|_| CryptoError::Decrypt)?;

        let mut body = plaintext.to_vec();
        aead(dek.as_ref())?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(data_nonce),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .map_err(|_| CryptoError::Decrypt)?;

        let mut out = Vec::with_capacity(1 + 2 * NONCE_LEN + wrapped.len() + body.len());
        out.push(VERSION);
        out.extend_from_slice(&dek_nonce);
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&data_nonce);
        out.extend_from_slice(&body);
        Ok(SealedBlob(out))
    }

    /// Decrypts a blob sealed with [`MasterKey::seal`] under the same `context`.
    pub fn open(&self, blob: &SealedBlob, context: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let b = blob.0.as_slice();
        let (version, rest) = b.split_first().ok_or(CryptoError::Decrypt)?;
        if *version != VERSION {
            return Err(CryptoError::KeyFormat("unknown sealed blob version"));
        }
        let (dek_nonce, rest) = split(rest, NONCE_LEN)?;
        let (wrapped, rest) = split(rest, KEY_LEN + TAG_LEN)?;
        let (data_nonce, body) = split(rest, NONCE_LEN)?;

        let mut dek = Zeroizing::new(wrapped.to_vec());
        let dek_plain = aead(self.0.as_ref())?
            .open_in_place(nonce(dek_nonce)?, Aad::from(context.as_bytes()), dek.as_mut_slice())
            .map_err(|_| CryptoError::Decrypt)?;
        let dek_key = aead(dek_plain)?;

        let mut data = Zeroizing::new(body.to_vec());
        let len = dek_key
            .open_in_place(nonce(data_nonce)?, Aad::from(context.as_bytes()), data.as_mut_slice())
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        data.truncate(len);
        Ok(data)
    }
}

fn aead(key: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::KeyFormat("aead key"))
}

fn nonce(bytes: &[u8]) -> Result<Nonce, CryptoError> {
    Nonce::try_assume_unique_for_key(bytes).map_err(|_| CryptoError::Decrypt)
}

fn split(b: &[u8], at: usize) -> Result<(&[u8], &[u8]), CryptoError> {
    if b.len() < at {
        return Err(CryptoError::Decrypt);
    }
    Ok(b.split_at(at))
}

/// Ciphertext produced by [`MasterKey::seal`]; opaque bytes for storage.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob(pub Vec<u8>);

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedBlob({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() -> Result<(), CryptoError> {
        let mk = MasterKey::generate()?;
        let blob = mk.seal(b"secret key bytes", "kid:1")?;
        assert_eq!(mk.open(&blob, "kid:1")?.as_slice(), b"secret key bytes");
        assert!(mk.open(&blob, "kid:2").is_err());
        let other = MasterKey::generate()?;
        assert!(other.open(&blob, "kid:1").is_err());
        let mut tampered = blob.clone();
        if let Some(last) = tampered.0.last_mut() {
            *last ^= 1;
        }
        assert!(mk.open(&tampered, "kid:1").is_err());
        assert!(mk.open(&SealedBlob(vec![1, 2, 3]), "kid:1").is_err());
        Ok(())
    }

    #[test]
    fn base64_forms() -> Result<(), CryptoError> {
        let mk = MasterKey::generate()?;
        let again = MasterKey::from_base64(&mk.to_base64())?;
        assert_eq!(mk.derive("x").as_ref(), again.derive("x").as_ref());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        Ok(())
    }
}
