//! A sha256 digest, written as 64 lowercase hexadecimal digits, and the
//! hashing of a file's content (RustCrypto's `sha2`, SHA-NI where the CPU has it).

use std::io::Read;

use sha2::Digest as _;

/// A sha256 digest. Displays and parses as 64 hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The digest of everything `reader` yields.
    pub fn of_reader(mut reader: impl Read) -> std::io::Result<Sha256> {
        let mut hasher = sha2::Sha256::new();
        // Large reads: a plugin binary is tens of megabytes.
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buffer[..n]);
        }
        Ok(Sha256(hasher.finalize().into()))
    }

    /// The digest of the file at `path` (symlinks followed).
    pub fn of_file(path: &std::path::Path) -> std::io::Result<Sha256> {
        Sha256::of_reader(std::fs::File::open(path)?)
    }
}

impl std::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sha256({self})")
    }
}

/// Text that is not a sha256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a sha256 digest: expected 64 hexadecimal digits")]
pub struct InvalidSha256(pub String);

impl std::str::FromStr for Sha256 {
    type Err = InvalidSha256;

    fn from_str(text: &str) -> Result<Sha256, InvalidSha256> {
        let invalid = || InvalidSha256(text.to_string());
        // from_str_radix alone would take a sign ("+f").
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(Sha256(bytes))
    }
}

impl serde::Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Sha256, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_and_their_text() {
        // FIPS 180-2's "abc" and the empty input.
        let abc = Sha256::of_reader(&b"abc"[..]).unwrap();
        assert_eq!(
            abc.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let empty = Sha256::of_reader(&b""[..]).unwrap();
        assert_eq!(
            empty.to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(abc.to_string().parse::<Sha256>().unwrap(), abc);
        // Upper case is accepted, shown lower case.
        let upper = abc.to_string().to_uppercase();
        assert_eq!(upper.parse::<Sha256>().unwrap(), abc);
    }

    #[test]
    fn not_a_digest() {
        for bad in [
            "",
            "abc",
            &"g".repeat(64),
            &"a".repeat(63),
            &"é".repeat(32),
            &"+f".repeat(32),
        ] {
            assert!(bad.parse::<Sha256>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_large_input_hashes_across_reads() {
        let data = vec![7u8; 600 * 1024];
        let whole = sha2::Sha256::digest(&data);
        assert_eq!(
            Sha256::of_reader(&data[..]).unwrap().0,
            <[u8; 32]>::from(whole)
        );
    }
}
