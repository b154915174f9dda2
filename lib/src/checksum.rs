//! A content checksum as stead records it, `blake3:<64 lowercase hex>`
//! (or another text, such as a secret-bearing file's keyed checksum), held
//! in the 32 bytes of its digest when it has that exact form: a plan or a
//! cache of 100 000 files would otherwise hold 100 000 71-byte strings.
//!
//! Two checksums are equal exactly when their texts are: only the exact
//! lowercase form is packed, and the text is given back byte for byte.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A checksum's text, packed when it is `blake3:<64 lowercase hex>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Checksum {
    /// `blake3:<hex>`, as its digest.
    Blake3([u8; 32]),
    /// Any other text, as it is.
    Other(Box<str>),
}

impl Checksum {
    /// The checksum that `text` spells.
    pub fn of(text: &str) -> Checksum {
        match text.strip_prefix("blake3:").and_then(lowercase_hex_32) {
            Some(digest) => Checksum::Blake3(digest),
            None => Checksum::Other(text.into()),
        }
    }

    /// Whether its text is `text`.
    pub fn is(&self, text: &str) -> bool {
        match self {
            Checksum::Blake3(digest) => {
                text.strip_prefix("blake3:").and_then(lowercase_hex_32) == Some(*digest)
            }
            Checksum::Other(own) => **own == *text,
        }
    }

    /// Its text.
    pub fn text(&self) -> String {
        self.to_string()
    }

    /// Whether it is a sensitive file's keyed checksum
    /// ([`crate::secret::is_secret_checksum`]; never the packed form).
    pub fn is_secret(&self) -> bool {
        matches!(self, Checksum::Other(text) if crate::secret::is_secret_checksum(text))
    }
}

impl From<&str> for Checksum {
    fn from(text: &str) -> Checksum {
        Checksum::of(text)
    }
}

impl From<String> for Checksum {
    fn from(text: String) -> Checksum {
        match text.strip_prefix("blake3:").and_then(lowercase_hex_32) {
            Some(digest) => Checksum::Blake3(digest),
            None => Checksum::Other(text.into_boxed_str()),
        }
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::Blake3(digest) => {
                write!(f, "blake3:{}", blake3::Hash::from_bytes(*digest).to_hex())
            }
            Checksum::Other(own) => f.write_str(own),
        }
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl PartialEq<str> for Checksum {
    fn eq(&self, other: &str) -> bool {
        self.is(other)
    }
}

impl PartialEq<&str> for Checksum {
    fn eq(&self, other: &&str) -> bool {
        self.is(other)
    }
}

impl PartialEq<String> for Checksum {
    fn eq(&self, other: &String) -> bool {
        self.is(other)
    }
}

impl Serialize for Checksum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Checksum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checksum, D::Error> {
        String::deserialize(deserializer).map(Checksum::from)
    }
}

/// The 32 bytes that `hex` (64 lowercase hex digits, nothing else) spells.
fn lowercase_hex_32(hex: &str) -> Option<[u8; 32]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "blake3:20e9d9f3d6e4a9ab9b8e7a2e5b1c3d4f60718293a4b5c6d7e8f90a1b2c3d4e5f";

    #[test]
    fn a_checksum_gives_back_exactly_the_text_it_was_made_of() {
        for text in [
            SUM,
            "blake3:ABCDEF0000000000000000000000000000000000000000000000000000000000",
            "blake3:abc",
            "keyed-blake3:0123",
            "",
            "blake3:",
        ] {
            let packed = Checksum::of(text);
            assert_eq!(packed.text(), text);
            assert!(packed.is(text));
            assert_eq!(Checksum::from(text.to_string()), packed);
            let json = serde_json::to_string(&packed).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(serde_json::from_str::<Checksum>(&json).unwrap(), packed);
        }
        assert!(matches!(Checksum::of(SUM), Checksum::Blake3(_)), "packed");
        assert!(matches!(Checksum::of("blake3:abc"), Checksum::Other(_)));
    }

    #[test]
    fn checksums_are_equal_exactly_when_their_texts_are() {
        let upper = SUM.to_uppercase().replace("BLAKE3", "blake3");
        assert_ne!(Checksum::of(SUM), Checksum::of(&upper));
        assert!(!Checksum::of(SUM).is(&upper));
        assert!(Checksum::of(SUM) == *SUM);
        let text = String::from(SUM);
        assert!(Checksum::of(SUM) == text);
        assert!(!Checksum::of(SUM).is("blake3:20e9"));
    }
}
