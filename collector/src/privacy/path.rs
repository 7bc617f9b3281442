//! A policy's field paths (`user_id`, `context.ip`, `properties.*.token`), parsed once
//! when the policy file is read: a bad path is an error naming its key there, and the
//! engine never parses again.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A dotted field path, parsed once: `context.ip`, `properties.*.token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    /// The path as written, for error messages and serialization.
    text: String,
    /// `user_id`, `device_id`, `session_id`, `surface`, `app_version`, `context`,
    /// `properties`.
    pub(super) root: Root,
    /// Keys below `context` / `properties` (`None` is the `*` wildcard).
    pub(super) rest: Vec<Option<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Root {
    UserId,
    DeviceId,
    SessionId,
    Surface,
    AppVersion,
    Context,
    Properties,
}

impl Root {
    pub(super) fn name(self) -> &'static str {
        match self {
            Root::UserId => "user_id",
            Root::DeviceId => "device_id",
            Root::SessionId => "session_id",
            Root::Surface => "surface",
            Root::AppVersion => "app_version",
            Root::Context => "context",
            Root::Properties => "properties",
        }
    }
}

impl FieldPath {
    /// Parses a dotted path.
    ///
    /// # Errors
    /// An empty segment, or a first segment that is not a field a policy may touch.
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        let mut parts = text.split('.');
        let first = parts.next().unwrap_or_default();
        let root = match first {
            "user_id" => Root::UserId,
            "device_id" => Root::DeviceId,
            "session_id" => Root::SessionId,
            "surface" => Root::Surface,
            "app_version" => Root::AppVersion,
            "context" => Root::Context,
            "properties" => Root::Properties,
            other => {
                return Err(format!(
                    "{other:?} cannot be changed by a policy (use user_id, device_id, session_id, surface, app_version, context.…, properties.…)"
                ));
            }
        };
        let rest: Vec<Option<String>> = parts
            .map(|p| match p {
                "" => Err("empty path segment".to_owned()),
                "*" => Ok(None),
                key => Ok(Some(key.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        let is_map = matches!(root, Root::Context | Root::Properties);
        if is_map && rest.is_empty() {
            return Err(format!("name a key below {first} (e.g. {first}.ip)"));
        }
        if !is_map && !rest.is_empty() {
            return Err(format!("{first} has no keys below it"));
        }
        Ok(FieldPath {
            text: text.to_owned(),
            root,
            rest,
        })
    }
}

impl Serialize for FieldPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FieldPath, D::Error> {
        let text = String::deserialize(d)?;
        FieldPath::parse(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
    }
}
