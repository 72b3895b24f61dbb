//! A serde `Deserializer` adapter that decodes owned byte buffers and
//! strings from the borrowed input in one copy.
//!
//! bincode 2 decodes a `Vec<u8>` (what `serde_bytes`' `ByteBuf` and a
//! `#[serde(with = "serde_bytes")] Vec<u8>` field ask for with
//! `deserialize_byte_buf`) and a `String` by zero-filling a new buffer of
//! the announced length and then copying the bytes into it: two passes
//! over every byte. Asked for borrowed bytes or a borrowed `str` instead,
//! it hands the visitor a slice of the input, and the standard visitors
//! copy it once into their own buffer (`<[u8]>::to_vec`). [`Owned`] wraps
//! a deserializer (and, recursively, every one it hands out: sequence
//! elements, map entries, enum variants, options, newtypes) and turns
//! `deserialize_byte_buf` into `deserialize_bytes` and
//! `deserialize_string` into `deserialize_str`; everything else passes
//! through unchanged.
//!
//! Nothing is allocated before the bytes are known to be in the input: a
//! borrowed slice must lie inside it, so the claim limit of
//! [`crate::codec`] still bounds what hostile bytes can make us allocate.

use std::fmt;

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// A deserializer whose byte buffers and strings are decoded borrowed,
/// then copied once (see the [module docs](self)).
pub(crate) struct Owned<D>(pub(crate) D);

/// Wraps what a visitor is handed, so nested values are [`Owned`] too.
struct Wrap<V>(V);

macro_rules! forward {
    ($($method:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method(Wrap(visitor))
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Owned<D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_bytes,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_str(Own(visitor))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_bytes(Own(visitor))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, Wrap(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, Wrap(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, Wrap(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, Wrap(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, Wrap(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, Wrap(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! visit {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method<E: serde::de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.0.$method(v)
        })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    visit!(
        visit_bool: bool,
        visit_i8: i8,
        visit_i16: i16,
        visit_i32: i32,
        visit_i64: i64,
        visit_i128: i128,
        visit_u8: u8,
        visit_u16: u16,
        visit_u32: u32,
        visit_u64: u64,
        visit_u128: u128,
        visit_f32: f32,
        visit_f64: f64,
        visit_char: char,
        visit_string: String,
        visit_byte_buf: Vec<u8>,
    );

    // An empty string may stand for a bulk one (`crate::bulk`).
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<V::Value, E> {
        match bulk_str(v)? {
            Some(s) => self.0.visit_string(s),
            None => self.0.visit_str(v),
        }
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        match bulk_str(v)? {
            Some(s) => self.0.visit_string(s),
            None => self.0.visit_borrowed_str(v),
        }
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        match bulk_bytes(v) {
            Some(b) => self.0.visit_byte_buf(b),
            None => self.0.visit_bytes(v),
        }
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
        match bulk_bytes(v) {
            Some(b) => self.0.visit_byte_buf(b),
            None => self.0.visit_borrowed_bytes(v),
        }
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(Owned(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(Owned(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(Wrap(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Wrap(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(Wrap(data))
    }
}

/// The visitor of a `deserialize_string` / `deserialize_byte_buf` turned
/// borrowed: it still gets what it asked for, an owned `String` or
/// `Vec<u8>` (`visit_string`, `visit_byte_buf`), copied once from the
/// input.
struct Own<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Own<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<V::Value, E> {
        match bulk_str(v)? {
            Some(s) => self.0.visit_string(s),
            None => self.0.visit_string(v.to_owned()),
        }
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<V::Value, E> {
        self.0.visit_string(v)
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        match bulk_bytes(v) {
            Some(b) => self.0.visit_byte_buf(b),
            None => self.0.visit_byte_buf(v.to_vec()),
        }
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<V::Value, E> {
        self.0.visit_byte_buf(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(Wrap(seq))
    }
}

/// The bulk byte string (`crate::bulk`) an empty one read from the input
/// stands for, if any: the buffer the socket filled, not a copy.
#[inline]
fn bulk_bytes(v: &[u8]) -> Option<Vec<u8>> {
    if v.is_empty() {
        crate::bulk::take(v)
    } else {
        None
    }
}

/// [`bulk_bytes`] for a string: the bytes must be UTF-8.
#[inline]
fn bulk_str<E: serde::de::Error>(v: &str) -> Result<Option<String>, E> {
    match bulk_bytes(v.as_bytes()) {
        Some(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| E::custom("a bulk string is not valid UTF-8")),
        None => Ok(None),
    }
}

/// A seed whose deserializer is [`Owned`].
pub(crate) struct Seed<S>(pub(crate) S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Owned(d))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Seed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Wrap<A> {
    type Error = A::Error;
    type Variant = Wrap<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Wrap<A::Variant>), A::Error> {
        self.0
            .variant_seed(Seed(seed))
            .map(|(value, variant)| (value, Wrap(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Seed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Wrap(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, Wrap(visitor))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};
    use serde_bytes::ByteBuf;

    use crate::codec::{decode, encode};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Shape {
        Unit,
        Newtype(#[serde(with = "serde_bytes")] Vec<u8>),
        Tuple(String, ByteBuf),
        Struct { name: String, bytes: ByteBuf },
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Unit;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Wrapper(String);

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Everything {
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        text: String,
        maybe: Option<String>,
        none: Option<ByteBuf>,
        shapes: Vec<Shape>,
        map: BTreeMap<String, ByteBuf>,
        tuple: (u8, String, i128, f64, char, bool),
        unit: Unit,
        newtype: Wrapper,
        plain: Vec<u8>,
        nested: Vec<Vec<String>>,
    }

    #[test]
    fn every_shape_round_trips() {
        let v = Everything {
            blob: (0..100_000u32).map(|i| i as u8).collect(),
            text: "héllo".into(),
            maybe: Some("x".repeat(1000)),
            none: None,
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(vec![1, 2, 3]),
                Shape::Tuple("t".into(), ByteBuf::from(vec![4; 70_000])),
                Shape::Struct {
                    name: String::new(),
                    bytes: ByteBuf::new(),
                },
            ],
            map: [("a".to_owned(), ByteBuf::from(vec![9; 5]))]
                .into_iter()
                .collect(),
            tuple: (7, "s".into(), -1 << 100, 0.5, 'ß', true),
            unit: Unit,
            newtype: Wrapper("w".into()),
            plain: vec![1, 2, 3],
            nested: vec![vec!["a".into(), "bc".into()], vec![]],
        };
        assert_eq!(decode::<Everything>(&encode(&v).unwrap()).unwrap(), v);
    }

    /// A type whose visitor takes only owned strings and buffers (no
    /// `visit_str` / `visit_bytes`) still decodes.
    #[derive(Debug, PartialEq)]
    struct OnlyOwned(String, Vec<u8>);

    // On purpose: a visitor without `visit_str` is the case under test.
    #[allow(clippy::serde_api_misuse)]
    impl<'de> Deserialize<'de> for OnlyOwned {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct S;
            impl serde::de::Visitor<'_> for S {
                type Value = String;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an owned string")
                }
                fn visit_string<E>(self, v: String) -> Result<String, E> {
                    Ok(v)
                }
            }
            struct B;
            impl serde::de::Visitor<'_> for B {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an owned buffer")
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                    Ok(v)
                }
            }
            struct Pair;
            impl<'de> serde::de::Visitor<'de> for Pair {
                type Value = OnlyOwned;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a pair")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<OnlyOwned, A::Error> {
                    struct Str;
                    impl<'de> serde::de::DeserializeSeed<'de> for Str {
                        type Value = String;
                        fn deserialize<D: serde::Deserializer<'de>>(
                            self,
                            d: D,
                        ) -> Result<String, D::Error> {
                            d.deserialize_string(S)
                        }
                    }
                    struct Buf;
                    impl<'de> serde::de::DeserializeSeed<'de> for Buf {
                        type Value = Vec<u8>;
                        fn deserialize<D: serde::Deserializer<'de>>(
                            self,
                            d: D,
                        ) -> Result<Vec<u8>, D::Error> {
                            d.deserialize_byte_buf(B)
                        }
                    }
                    let s = seq.next_element_seed(Str)?.unwrap_or_default();
                    let b = seq.next_element_seed(Buf)?.unwrap_or_default();
                    Ok(OnlyOwned(s, b))
                }
            }
            d.deserialize_tuple(2, Pair)
        }
    }

    #[test]
    fn visitors_that_take_only_owned_values_get_them() {
        let bytes = encode(&("owned", ByteBuf::from(vec![3; 20]))).unwrap();
        assert_eq!(
            decode::<OnlyOwned>(&bytes).unwrap(),
            OnlyOwned("owned".into(), vec![3; 20])
        );
    }

    #[test]
    fn a_length_past_the_input_allocates_nothing_and_fails() {
        // A byte string claiming 1 GiB, backed by 3 bytes.
        let mut bytes = encode(&ByteBuf::from(vec![1, 2, 3])).unwrap();
        bytes[0] = 252; // varint: a u32 follows
        bytes.splice(1..1, (1u32 << 30).to_le_bytes());
        assert!(decode::<ByteBuf>(&bytes).is_err());
        assert!(decode::<String>(&bytes).is_err());
    }
}
