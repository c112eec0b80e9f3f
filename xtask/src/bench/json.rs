//! Report structs declared once with their JSON: [`json_struct!`] writes a
//! struct, its [`ToJson`] and, with `read`, its [`FromJson`] for figures read
//! back from a program's JSON line. By hand rather than serde's derive, which
//! is the longest step of a cold `cargo xtask` build.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use serde_json::Value;

/// A value as a report's JSON holds it.
pub trait ToJson {
    fn to_json(&self) -> Value;
}

/// A field read back from a program's JSON object.
pub trait FromJson: Sized {
    /// `object[key]`; the error names the key.
    fn read(object: &Value, key: &str) -> Result<Self>;
}

macro_rules! to_json_as_value {
    ($($ty:ty),*) => {
        $(impl ToJson for $ty {
            fn to_json(&self) -> Value {
                Value::from(self.clone())
            }
        })*
    };
}
to_json_as_value!(u32, u64, usize, f64, bool, String, &'static str);

impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToJson::to_json)
    }
}

impl<T: ToJson> ToJson for [T] {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(ToJson::to_json).collect())
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Value {
        self.as_slice().to_json()
    }
}

/// A pair as a two-element array.
impl<A: ToJson, B: ToJson> ToJson for (A, B) {
    fn to_json(&self) -> Value {
        Value::Array(vec![self.0.to_json(), self.1.to_json()])
    }
}

impl ToJson for BTreeMap<String, String> {
    fn to_json(&self) -> Value {
        Value::Object(
            self.iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect(),
        )
    }
}

impl FromJson for u64 {
    fn read(object: &Value, key: &str) -> Result<u64> {
        object
            .get(key)
            .and_then(Value::as_u64)
            .with_context(|| format!("no whole number `{key}`"))
    }
}

impl FromJson for String {
    fn read(object: &Value, key: &str) -> Result<String> {
        object
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("no string `{key}`"))
    }
}

/// The JSON key of a field: its name, or the one given with `=> "key"`.
macro_rules! json_key {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident $key:literal) => {
        $key
    };
}

/// A field as `from_json` reads it: from the object, or the value given with
/// `= value` for a field the program does not print.
macro_rules! json_read {
    ($object:ident $key:expr, $ty:ty) => {
        <$ty as $crate::bench::json::FromJson>::read($object, $key)?
    };
    ($object:ident $key:expr, $ty:ty, $default:expr) => {
        $default
    };
}

/// `pub struct Name { pub field: Type, ... }` with its `ToJson`, each field
/// under its name or `=> "key"`; `read pub struct ...` adds `FromJson`,
/// where a field written `= value` is not read but set to it.
macro_rules! json_struct {
    (
        read
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* pub $field:ident: $ty:ty $(=> $key:literal)? $(= $default:expr)?),* $(,)?
        }
    ) => {
        $crate::bench::json::json_struct! {
            $(#[$meta])*
            pub struct $name {
                $($(#[$fmeta])* pub $field: $ty $(=> $key)?),*
            }
        }
        impl $name {
            /// The object a program printed.
            pub fn from_json(object: &serde_json::Value) -> anyhow::Result<$name> {
                Ok($name {
                    $($field: $crate::bench::json::json_read!(object $crate::bench::json::json_key!($field $($key)?), $ty $(, $default)?)),*
                })
            }
        }
        impl $crate::bench::json::FromJson for $name {
            fn read(object: &serde_json::Value, key: &str) -> anyhow::Result<$name> {
                use anyhow::Context as _;
                $name::from_json(object.get(key).unwrap_or(&serde_json::Value::Null))
                    .with_context(|| format!("in `{key}`"))
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* pub $field:ident: $ty:ty $(=> $key:literal)?),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty),*
        }
        impl $crate::bench::json::ToJson for $name {
            fn to_json(&self) -> serde_json::Value {
                let mut object = serde_json::Map::new();
                $(object.insert(
                    $crate::bench::json::json_key!($field $($key)?).to_owned(),
                    $crate::bench::json::ToJson::to_json(&self.$field),
                );)*
                serde_json::Value::Object(object)
            }
        }
    };
}

pub(crate) use {json_key, json_read, json_struct};

#[cfg(test)]
mod tests {
    use super::*;

    json_struct! {
        read
        #[derive(Debug, PartialEq)]
        pub struct Inner {
            pub a: u64 => "a_ns",
        }
    }

    json_struct! {
        read
        #[derive(Debug, PartialEq)]
        pub struct Outer {
            pub n: u64,
            pub inner: Inner,
            pub filled_later: u64 = 7,
        }
    }

    #[test]
    fn a_struct_reads_back_what_it_writes_under_its_keys() {
        let outer = Outer {
            n: 1,
            inner: Inner { a: 2 },
            filled_later: 7,
        };
        let json = outer.to_json();
        assert_eq!(
            json.to_string(),
            r#"{"filled_later":7,"inner":{"a_ns":2},"n":1}"#
        );
        assert_eq!(Outer::from_json(&json).unwrap(), outer);
    }

    #[test]
    fn a_missing_field_is_named_with_where_it_was_looked_for() {
        let json: Value = serde_json::from_str(r#"{"n":1,"inner":{}}"#).unwrap();
        let err = format!("{:#}", Outer::from_json(&json).unwrap_err());
        assert_eq!(err, "in `inner`: no whole number `a_ns`");
    }
}
