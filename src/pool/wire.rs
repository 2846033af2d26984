//! How task inputs and results become bytes: [`Wire`], implemented for
//! every `bytemuck::Pod` type under [`PodCodec`] (the bytes of the value,
//! no encoding) and, with feature `serde`, for every serde type under
//! [`SerdeCodec`] (postcard).
//!
//! Both sides of a pool are the same executable, so a type has the same
//! layout and the same serde shape in the parent and in its workers; that
//! is what makes decoding a `Pod` value from its bytes sound without any
//! tag. Do not start workers from a different build.

use std::fmt;

/// A codec marker: picks which [`Wire`] implementation a pool uses.
pub trait Codec: Send + Sync + 'static {
    /// The largest encoded size when a type does not say (bytes).
    const DEFAULT_MAX: usize;
}

/// Values sent as their own bytes: any `bytemuck::Pod` type, copied in and
/// out of the slot, nothing encoded.
#[derive(Clone, Copy, Debug, Default)]
pub struct PodCodec;

impl Codec for PodCodec {
    const DEFAULT_MAX: usize = 0;
}

/// Values encoded with postcard (feature `serde`): any type that is
/// `Serialize + DeserializeOwned`.
#[cfg(feature = "serde")]
#[derive(Clone, Copy, Debug, Default)]
pub struct SerdeCodec;

#[cfg(feature = "serde")]
impl Codec for SerdeCodec {
    const DEFAULT_MAX: usize = 1024;
}

/// A value that travels through a pool under codec `C`.
pub trait Wire<C: Codec>: Sized {
    /// The exact encoded size, if every value has the same.
    fn fixed_len() -> Option<usize>;

    /// Appends the encoding of `self` to `buf`.
    fn encode(&self, buf: &mut Vec<u8>) -> Result<(), WireError>;

    /// Decodes a value from exactly `bytes`.
    fn decode(bytes: &[u8]) -> Result<Self, WireError>;
}

impl<T: bytemuck::Pod> Wire<PodCodec> for T {
    fn fixed_len() -> Option<usize> {
        Some(std::mem::size_of::<T>())
    }

    #[inline]
    fn encode(&self, buf: &mut Vec<u8>) -> Result<(), WireError> {
        buf.extend_from_slice(bytemuck::bytes_of(self));
        Ok(())
    }

    #[inline]
    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        bytemuck::try_pod_read_unaligned(bytes).map_err(|_| WireError::Size {
            expected: std::mem::size_of::<T>(),
            got: bytes.len(),
        })
    }
}

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Wire<SerdeCodec> for T {
    fn fixed_len() -> Option<usize> {
        None
    }

    fn encode(&self, buf: &mut Vec<u8>) -> Result<(), WireError> {
        let taken = std::mem::take(buf);
        match postcard::to_extend(self, taken) {
            Ok(v) => {
                *buf = v;
                Ok(())
            }
            Err(e) => Err(WireError::Serde(Box::new(e))),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        match postcard::take_from_bytes(bytes) {
            Ok((v, [])) => Ok(v),
            Ok((_, rest)) => Err(WireError::Trailing { extra: rest.len() }),
            Err(e) => Err(WireError::Serde(Box::new(e))),
        }
    }
}

/// A value could not be encoded or decoded.
#[derive(Debug)]
#[non_exhaustive]
pub enum WireError {
    /// A `Pod` value's bytes are not of its size.
    Size {
        /// `size_of` the type.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// Bytes were left over after the value.
    Trailing {
        /// How many.
        extra: usize,
    },
    /// The serde encoder or decoder failed.
    Serde(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Size { expected, got } => {
                write!(f, "expected {expected} bytes for the value, got {got}")
            }
            WireError::Trailing { extra } => write!(f, "{extra} bytes left after the value"),
            WireError::Serde(e) => write!(f, "serde: {e}"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Serde(e) => Some(&**e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_round_trips_and_checks_size() {
        let mut buf = Vec::new();
        <[u32; 3] as Wire<PodCodec>>::encode(&[1, 2, 3], &mut buf).unwrap();
        assert_eq!(buf.len(), 12);
        let v: [u32; 3] = <[u32; 3] as Wire<PodCodec>>::decode(&buf).unwrap();
        assert_eq!(v, [1, 2, 3]);
        let e = <[u32; 3] as Wire<PodCodec>>::decode(&buf[..11]).unwrap_err();
        assert!(
            matches!(
                e,
                WireError::Size {
                    expected: 12,
                    got: 11
                }
            ),
            "{e}"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_round_trips_and_rejects_trailing_bytes() {
        let mut buf = vec![9u8];
        let value = (7u64, String::from("hello"));
        <(u64, String) as Wire<SerdeCodec>>::encode(&value, &mut buf).unwrap();
        assert_eq!(buf[0], 9, "appends");
        let back: (u64, String) = <(u64, String) as Wire<SerdeCodec>>::decode(&buf[1..]).unwrap();
        assert_eq!(back, value);
        let mut long = buf[1..].to_vec();
        long.push(0);
        let e = <(u64, String) as Wire<SerdeCodec>>::decode(&long).unwrap_err();
        assert!(matches!(e, WireError::Trailing { extra: 1 }), "{e}");
    }
}
