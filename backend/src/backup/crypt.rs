//! Passphrase encryption of a whole archive: AES-256-GCM in 64 KiB chunks under a key derived with
//! Argon2id (the crates the server already uses for secrets and passwords).
//!
//! The chunks follow the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár): each chunk's nonce is a
//! random prefix, the chunk's counter and a flag marking the last chunk, and every chunk authenticates the
//! header. A changed byte, reordered or dropped chunks, or a file cut short (the last chunk never
//! arrives, or a cut at a chunk boundary turns a middle chunk into a "last" one it was not sealed as) all
//! fail authentication, as does a wrong passphrase, on the first chunk.

use std::io::{self, BufRead, Read, Write};

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;

/// The first bytes of an encrypted archive.
pub const MAGIC: &[u8; 16] = b"PEPEUNIT-BACKUP\x01";
const SALT_LEN: usize = 16;
const PREFIX_LEN: usize = 7;
const HEADER_LEN: usize = MAGIC.len() + SALT_LEN + 12 + PREFIX_LEN;
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

/// Argon2id cost for new archives: 64 MiB, three passes (the RFC 9106 second recommendation).
const M_COST_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;
/// Largest costs accepted from a header, so a crafted archive cannot make a restore allocate without bound.
const MAX_M_COST_KIB: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 16;

fn derive(passphrase: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> io::Result<Aes256Gcm> {
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(invalid)?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(passphrase, salt, &mut key)
        .map_err(invalid)?;
    Ok(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)))
}

fn invalid(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error.to_string())
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the passphrase is wrong, or the archive was altered or cut short",
    )
}

fn nonce(prefix: &[u8], counter: u32, last: bool) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..PREFIX_LEN].copy_from_slice(prefix);
    nonce[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&counter.to_be_bytes());
    nonce[11] = u8::from(last);
    nonce
}

/// Encrypts everything written to it; [`Encryptor::finish`] seals the last chunk.
pub struct Encryptor<W: Write> {
    inner: W,
    cipher: Aes256Gcm,
    header: Vec<u8>,
    prefix: [u8; PREFIX_LEN],
    counter: u32,
    buffer: Vec<u8>,
}

impl<W: Write> Encryptor<W> {
    /// Writes the header (salt, KDF costs, nonce prefix) to `inner`.
    pub fn new(mut inner: W, passphrase: &[u8]) -> io::Result<Self> {
        let mut salt = [0u8; SALT_LEN];
        let mut prefix = [0u8; PREFIX_LEN];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut prefix);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&salt);
        for cost in [M_COST_KIB, T_COST, 1] {
            header.extend_from_slice(&cost.to_le_bytes());
        }
        header.extend_from_slice(&prefix);
        let cipher = derive(passphrase, &salt, M_COST_KIB, T_COST, 1)?;
        inner.write_all(&header)?;
        Ok(Self {
            inner,
            cipher,
            header,
            prefix,
            counter: 0,
            buffer: Vec::with_capacity(2 * CHUNK),
        })
    }

    fn seal(&mut self, len: usize, last: bool) -> io::Result<()> {
        let nonce = nonce(&self.prefix, self.counter, last);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &self.buffer[..len],
                    aad: &self.header,
                },
            )
            .map_err(|_| invalid("encryption failed"))?;
        self.inner.write_all(&sealed)?;
        self.buffer.drain(..len);
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| invalid("archive too large to encrypt"))?;
        Ok(())
    }

    /// Seals what is left as the last chunk and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let len = self.buffer.len();
        self.seal(len, true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Encryptor<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        // A full chunk is sealed only once more data follows it: the last chunk is sealed by `finish`.
        while self.buffer.len() > CHUNK {
            self.seal(CHUNK, false)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts an archive written by [`Encryptor`], failing with `InvalidData` at the first chunk that does
/// not authenticate and when the stream ends before its last chunk.
pub struct Decryptor<R: BufRead> {
    inner: R,
    cipher: Aes256Gcm,
    header: Vec<u8>,
    counter: u32,
    plain: Vec<u8>,
    at: usize,
    done: bool,
}

impl<R: BufRead> Decryptor<R> {
    /// Reads the header and derives the key. `inner` must start with [`MAGIC`].
    pub fn new(mut inner: R, passphrase: &[u8]) -> io::Result<Self> {
        let mut header = vec![0u8; HEADER_LEN];
        inner
            .read_exact(&mut header)
            .map_err(|_| invalid("the archive is cut short"))?;
        if &header[..MAGIC.len()] != MAGIC {
            return Err(invalid("not an encrypted Pepeunit backup"));
        }
        let salt = &header[MAGIC.len()..MAGIC.len() + SALT_LEN];
        let cost = |i: usize| {
            let at = MAGIC.len() + SALT_LEN + 4 * i;
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&header[at..at + 4]);
            u32::from_le_bytes(bytes)
        };
        let (m, t, p) = (cost(0), cost(1), cost(2));
        if m > MAX_M_COST_KIB || t > MAX_T_COST || p != 1 {
            return Err(invalid(
                "the archive asks for key derivation costs out of range",
            ));
        }
        let cipher = derive(passphrase, salt, m, t, p)?;
        Ok(Self {
            inner,
            cipher,
            header,
            counter: 0,
            plain: Vec::new(),
            at: 0,
            done: false,
        })
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let mut sealed = Vec::with_capacity(CHUNK + TAG);
        (&mut self.inner)
            .take((CHUNK + TAG) as u64)
            .read_to_end(&mut sealed)?;
        if sealed.len() < TAG {
            return Err(refused());
        }
        let last = sealed.len() < CHUNK + TAG || self.inner.fill_buf()?.is_empty();
        let prefix = &self.header[HEADER_LEN - PREFIX_LEN..];
        let nonce = nonce(prefix, self.counter, last);
        self.plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &sealed,
                    aad: &self.header,
                },
            )
            .map_err(|_| refused())?;
        self.at = 0;
        self.counter = self.counter.checked_add(1).ok_or_else(refused)?;
        self.done = last;
        Ok(())
    }
}

impl<R: BufRead> Read for Decryptor<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.at);
        out[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(data: &[u8], passphrase: &[u8]) -> Vec<u8> {
        let mut e = Encryptor::new(Vec::new(), passphrase).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn open(sealed: &[u8], passphrase: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Decryptor::new(io::BufReader::new(sealed), passphrase)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(open(&seal(&data, b"pw"), b"pw").unwrap(), data, "{len}");
        }
    }

    #[test]
    fn wrong_passphrase_altered_and_truncated_are_refused() {
        let data: Vec<u8> = (0..2 * CHUNK + 100).map(|i| (i % 7) as u8).collect();
        let sealed = seal(&data, b"right");
        assert!(open(&sealed, b"wrong").is_err());
        let mut altered = sealed.clone();
        let at = HEADER_LEN + CHUNK + 5;
        altered[at] ^= 1;
        assert!(open(&altered, b"right").is_err());
        // Cut at a chunk boundary: the second chunk would pass as the last one if the flag were not sealed.
        let boundary = HEADER_LEN + 2 * (CHUNK + TAG);
        assert!(open(&sealed[..boundary], b"right").is_err());
        assert!(open(&sealed[..sealed.len() - 1], b"right").is_err());
        // The header (salt, costs) is authenticated too.
        let mut header = sealed.clone();
        header[MAGIC.len()] ^= 1;
        assert!(open(&header, b"right").is_err());
    }
}
