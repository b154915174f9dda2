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
        match self {
            // Spelled on the stack: a record holds one per managed file.
            Checksum::Blake3(digest) => {
                let mut text = [0u8; 71];
                text[..7].copy_from_slice(b"blake3:");
                text[7..].copy_from_slice(blake3::Hash::from_bytes(*digest).to_hex().as_bytes());
                match std::str::from_utf8(&text) {
                    Ok(text) => serializer.serialize_str(text),
                    Err(_) => serializer.collect_str(self),
                }
            }
            Checksum::Other(own) => serializer.serialize_str(own),
        }
    }
}

impl<'de> Deserialize<'de> for Checksum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checksum, D::Error> {
        /// Reads the text where the reader holds it: the packed form needs
        /// no string of its own.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Checksum;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a checksum string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Checksum, E> {
                Ok(Checksum::of(text))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Checksum, E> {
                Ok(Checksum::from(text))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// The 32 bytes that `hex` (64 lowercase hex digits, nothing else) spells.
/// By table and without a branch per digit: a record is read with one of
/// these per managed file.
fn lowercase_hex_32(hex: &str) -> Option<[u8; 32]> {
    /// Each byte's value as a lowercase hex digit, or `NOT_HEX`.
    const NOT_HEX: u8 = 0x10;
    const DIGITS: [u8; 256] = {
        let mut table = [NOT_HEX; 256];
        let mut i = 0;
        while i < 16 {
            table[b"0123456789abcdef"[i] as usize] = i as u8;
            i += 1;
        }
        table
    };
    let bytes: &[u8; 64] = hex.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    let mut seen = 0u8;
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (high, low) = (DIGITS[pair[0] as usize], DIGITS[pair[1] as usize]);
        seen |= high | low;
        *byte = high << 4 | low;
    }
    (seen & NOT_HEX == 0).then_some(out)
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

    /// Every byte at the first and the last digit's place: packed exactly
    /// when it is a lowercase hex digit, to the value `from_str_radix` reads.
    #[test]
    fn only_lowercase_hex_digits_are_packed() {
        let hex = &SUM["blake3:".len()..];
        for at in [0, 63] {
            for byte in 0..=255u8 {
                let mut text = hex.as_bytes().to_vec();
                text[at] = byte;
                let Ok(text) = String::from_utf8(text) else {
                    continue;
                };
                let digit = matches!(byte, b'0'..=b'9' | b'a'..=b'f');
                let got = lowercase_hex_32(&text);
                assert_eq!(got.is_some(), digit, "{byte:#x} at {at}");
                if let Some(bytes) = got {
                    let pair = &text[at / 2 * 2..at / 2 * 2 + 2];
                    assert_eq!(Some(bytes[at / 2]), u8::from_str_radix(pair, 16).ok());
                }
            }
        }
        assert_eq!(lowercase_hex_32(&hex[1..]), None, "63 digits");
        assert_eq!(lowercase_hex_32(&format!("{hex}0")), None, "65 digits");
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
