//! AMF0 values with a bounded decoder (depth, count and length checked) and an encoder.

use bytes::BufMut;

/// Deepest nesting of objects and arrays the decoder accepts.
pub const MAX_DEPTH: usize = 32;
/// Most values one decode call may produce, bounding memory per input byte.
pub const MAX_VALUES: usize = 65_536;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;

/// One AMF0 value; strings and long strings share [`Amf0Value::String`].
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    /// Encoded as a long string when longer than 65535 bytes.
    String(String),
    /// Anonymous object: ordered key/value pairs.
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    /// Associative array; the wire count is only a hint and is recomputed on encode.
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    /// Milliseconds since the Unix epoch plus the (unused) time zone field.
    Date {
        millis: f64,
        timezone: i16,
    },
}

impl Amf0Value {
    /// The string content, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The numeric value, if this is a number.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The properties of an object or ECMA array.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Self::Object(props) | Self::EcmaArray(props) => Some(props),
            _ => None,
        }
    }

    /// Looks up a property of an object or ECMA array by key.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

impl From<&str> for Amf0Value {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<String> for Amf0Value {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

impl From<f64> for Amf0Value {
    fn from(n: f64) -> Self {
        Self::Number(n)
    }
}

impl From<bool> for Amf0Value {
    fn from(b: bool) -> Self {
        Self::Boolean(b)
    }
}

/// Why AMF0 bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Amf0Error {
    #[error("unexpected end of AMF0 data")]
    Truncated,
    #[error("unsupported AMF0 marker 0x{0:02x}")]
    UnsupportedMarker(u8),
    #[error("unexpected AMF0 object end marker")]
    UnexpectedObjectEnd,
    #[error("AMF0 nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("more than {MAX_VALUES} AMF0 values")]
    TooManyValues,
}

/// Decodes one value from the front of `input`, returning it and the bytes consumed.
pub fn decode(input: &[u8]) -> Result<(Amf0Value, usize), Amf0Error> {
    let mut decoder = Decoder {
        buf: input,
        values: 0,
    };
    let value = decoder.value(0)?;
    Ok((value, input.len() - decoder.buf.len()))
}

/// Decodes consecutive values until `input` is exhausted.
pub fn decode_all(input: &[u8]) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut decoder = Decoder {
        buf: input,
        values: 0,
    };
    let mut out = Vec::new();
    while !decoder.buf.is_empty() {
        out.push(decoder.value(0)?);
    }
    Ok(out)
}

/// Appends the encoding of `value` to `out`.
///
/// Object keys longer than 65535 bytes are truncated because the format cannot express them.
pub fn encode(value: &Amf0Value, out: &mut impl BufMut) {
    match value {
        Amf0Value::Number(n) => {
            out.put_u8(NUMBER);
            out.put_f64(*n);
        }
        Amf0Value::Boolean(b) => {
            out.put_u8(BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Amf0Value::String(s) => match u16::try_from(s.len()) {
            Ok(len) => {
                out.put_u8(STRING);
                out.put_u16(len);
                out.put_slice(s.as_bytes());
            }
            Err(_) => {
                let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                out.put_u8(LONG_STRING);
                out.put_u32(len);
                out.put_slice(&s.as_bytes()[..len as usize]);
            }
        },
        Amf0Value::Object(props) => {
            out.put_u8(OBJECT);
            encode_properties(props, out);
        }
        Amf0Value::Null => out.put_u8(NULL),
        Amf0Value::Undefined => out.put_u8(UNDEFINED),
        Amf0Value::EcmaArray(props) => {
            out.put_u8(ECMA_ARRAY);
            out.put_u32(u32::try_from(props.len()).unwrap_or(u32::MAX));
            encode_properties(props, out);
        }
        Amf0Value::StrictArray(items) => {
            out.put_u8(STRICT_ARRAY);
            out.put_u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
            for item in items {
                encode(item, out);
            }
        }
        Amf0Value::Date { millis, timezone } => {
            out.put_u8(DATE);
            out.put_f64(*millis);
            out.put_i16(*timezone);
        }
    }
}

/// Encodes a sequence of values back to back, as command and data messages carry them.
pub fn encode_all(values: &[Amf0Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        encode(value, &mut out);
    }
    out
}

fn encode_properties(props: &[(String, Amf0Value)], out: &mut impl BufMut) {
    for (key, value) in props {
        let key = &key.as_bytes()[..key.len().min(usize::from(u16::MAX))];
        out.put_u16(key.len() as u16);
        out.put_slice(key);
        encode(value, out);
    }
    out.put_u16(0);
    out.put_u8(OBJECT_END);
}

/// Cursor over the input that counts values so output size stays proportional and bounded.
struct Decoder<'a> {
    buf: &'a [u8],
    values: usize,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Amf0Error> {
        if self.buf.len() < n {
            return Err(Amf0Error::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Amf0Error> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64, Amf0Error> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    fn string(&mut self, len: usize) -> Result<String, Amf0Error> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, Amf0Error> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(Amf0Error::TooManyValues);
        }
        let value = match self.u8()? {
            NUMBER => Amf0Value::Number(self.f64()?),
            BOOLEAN => Amf0Value::Boolean(self.u8()? != 0),
            STRING => {
                let len = self.u16()?;
                Amf0Value::String(self.string(usize::from(len))?)
            }
            OBJECT => Amf0Value::Object(self.properties(depth + 1)?),
            NULL => Amf0Value::Null,
            UNDEFINED => Amf0Value::Undefined,
            ECMA_ARRAY => {
                self.u32()?;
                Amf0Value::EcmaArray(self.properties(depth + 1)?)
            }
            OBJECT_END => return Err(Amf0Error::UnexpectedObjectEnd),
            STRICT_ARRAY => {
                if depth + 1 > MAX_DEPTH {
                    return Err(Amf0Error::TooDeep);
                }
                let count = self.u32()? as usize;
                // Every element takes at least one byte, so a larger count cannot be honest.
                if count > self.buf.len() {
                    return Err(Amf0Error::Truncated);
                }
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
            DATE => Amf0Value::Date {
                millis: self.f64()?,
                timezone: i16::from_be_bytes(self.array()?),
            },
            LONG_STRING => {
                let len = self.u32()? as usize;
                Amf0Value::String(self.string(len)?)
            }
            other => return Err(Amf0Error::UnsupportedMarker(other)),
        };
        Ok(value)
    }

    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
        if depth > MAX_DEPTH {
            return Err(Amf0Error::TooDeep);
        }
        let mut props = Vec::new();
        loop {
            let key_len = usize::from(self.u16()?);
            if key_len == 0 && self.buf.first() == Some(&OBJECT_END) {
                self.buf = &self.buf[1..];
                return Ok(props);
            }
            let key = self.string(key_len)?;
            let value = self.value(depth)?;
            props.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(value: Amf0Value) {
        let bytes = encode_all(std::slice::from_ref(&value));
        let (decoded, used) = decode(&bytes).expect("decode");
        assert_eq!(used, bytes.len());
        assert_eq!(decoded, value);
    }

    #[test]
    fn roundtrips_every_type() {
        roundtrip(Amf0Value::Number(1.5));
        roundtrip(Amf0Value::Boolean(true));
        roundtrip(Amf0Value::Boolean(false));
        roundtrip("hello".into());
        roundtrip(Amf0Value::String(String::new()));
        roundtrip(Amf0Value::Null);
        roundtrip(Amf0Value::Undefined);
        roundtrip(Amf0Value::Date {
            millis: 1_700_000_000_000.0,
            timezone: -60,
        });
        roundtrip(Amf0Value::Object(vec![
            ("app".into(), "live".into()),
            ("n".into(), 3.0.into()),
            (String::new(), Amf0Value::Null),
        ]));
        roundtrip(Amf0Value::EcmaArray(vec![("width".into(), 320.0.into())]));
        roundtrip(Amf0Value::StrictArray(vec![
            1.0.into(),
            "x".into(),
            Amf0Value::StrictArray(vec![]),
            Amf0Value::Object(vec![]),
        ]));
    }

    #[test]
    fn long_strings_use_long_marker() {
        let s = "a".repeat(70_000);
        let bytes = encode_all(&[Amf0Value::String(s.clone())]);
        assert_eq!(bytes[0], LONG_STRING);
        assert_eq!(decode(&bytes).unwrap().0, Amf0Value::String(s));
        let short = [LONG_STRING, 0, 0, 0, 2, b'h', b'i'];
        assert_eq!(decode(&short).unwrap().0, "hi".into());
    }

    #[test]
    fn decodes_known_wire_bytes() {
        let wire = [
            0x02, 0x00, 0x07, b'c', b'o', b'n', b'n', b'e', b'c', b't', 0x00, 0x3F, 0xF0, 0, 0, 0,
            0, 0, 0, 0x03, 0x00, 0x03, b'a', b'p', b'p', 0x02, 0x00, 0x04, b'l', b'i', b'v', b'e',
            0x00, 0x00, 0x09,
        ];
        let values = decode_all(&wire).unwrap();
        assert_eq!(values[0].as_str(), Some("connect"));
        assert_eq!(values[1].as_number(), Some(1.0));
        assert_eq!(
            values[2].get("app").and_then(Amf0Value::as_str),
            Some("live")
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode_all(&[Amf0Value::Object(vec![
            (
                "a".into(),
                Amf0Value::StrictArray(vec![1.0.into(), "s".into()]),
            ),
            (
                "b".into(),
                Amf0Value::EcmaArray(vec![("c".into(), true.into())]),
            ),
            (
                "d".into(),
                Amf0Value::Date {
                    millis: 0.0,
                    timezone: 0,
                },
            ),
        ])]);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix {len} decoded");
        }
    }

    #[test]
    fn rejects_hostile_input() {
        assert_eq!(
            decode(&[STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF, NULL]),
            Err(Amf0Error::Truncated)
        );
        assert_eq!(
            decode(&[LONG_STRING, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(Amf0Error::Truncated)
        );
        assert_eq!(decode(&[0x11]), Err(Amf0Error::UnsupportedMarker(0x11)));
        assert_eq!(decode(&[OBJECT_END]), Err(Amf0Error::UnexpectedObjectEnd));
        let mut deep = Vec::new();
        for _ in 0..40 {
            deep.extend_from_slice(&[OBJECT, 0, 1, b'k']);
        }
        deep.push(NULL);
        assert_eq!(decode(&deep), Err(Amf0Error::TooDeep));
        let mut nested_arrays = [STRICT_ARRAY, 0, 0, 0, 1].repeat(40);
        nested_arrays.push(NULL);
        assert_eq!(decode(&nested_arrays), Err(Amf0Error::TooDeep));
        let mut many = vec![STRICT_ARRAY, 0, 2, 0, 0];
        many.extend(std::iter::repeat_n(NULL, 0x20000));
        assert_eq!(decode(&many), Err(Amf0Error::TooManyValues));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        let (value, _) = decode(&[STRING, 0, 2, 0xFF, b'a']).unwrap();
        assert_eq!(value, Amf0Value::String("\u{FFFD}a".into()));
    }
}
