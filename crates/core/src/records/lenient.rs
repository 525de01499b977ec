//! Reading what a record holds leniently, keeping only so much: a record read back from storage
//! may hold anything in place of a list (another type, items of any shape, millions of them) or
//! pages of text in place of a sentence, and the record itself must stay readable.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// The most items kept of a list.
pub const MAX_ITEMS: usize = 64;

/// `text` cut to `max` bytes (on a character boundary), saying so.
pub fn shortened(mut text: String, max: usize) -> String {
    if text.len() > max {
        text.truncate(text.floor_char_boundary(max));
        text.push_str(" […]");
    }
    text
}

/// A list of `T` read by name (`T`'s own deserializer, given a string): an item that is not a
/// string, or not a name `T` reads, is `unknown`; a value that is not a list reads as none; at
/// most [`MAX_ITEMS`] are kept, and nothing else of the input is held.
pub fn names<'de, D, T>(d: D, unknown: T) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: de::DeserializeOwned + Copy,
{
    d.deserialize_any(List(unknown))
}

/// A list, and what stands for an item that is not a name.
struct List<T>(T);

/// One item: a name, or anything else (skipped without being held).
struct Item<T>(T);

impl<'de, T: de::DeserializeOwned + Copy> de::DeserializeSeed<'de> for Item<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
}

/// Consumes whatever the rest of a list or map holds, keeping none of it.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// What both visitors do with a value that is not what they look for: `$out` for it.
macro_rules! anything_else {
    ($out:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($out(self))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($out(self))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($out(self))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($out(self))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($out(self))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($out(self))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            skip_map(map)?;
            Ok($out(self))
        }
    };
}

impl<'de, T: de::DeserializeOwned + Copy> Visitor<'de> for Item<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok(T::deserialize(de::value::StrDeserializer::<E>::new(v)).unwrap_or(self.0))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        skip_seq(seq)?;
        Ok(self.0)
    }
    anything_else!(|s: Self| s.0);
}

impl<'de, T: de::DeserializeOwned + Copy> Visitor<'de> for List<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of names")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while out.len() < MAX_ITEMS {
            match seq.next_element_seed(Item(self.0))? {
                Some(item) => out.push(item),
                None => return Ok(out),
            }
        }
        skip_seq(seq)?;
        Ok(out)
    }
    anything_else!(|_| Vec::new());
}
