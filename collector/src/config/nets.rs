//! Lists of peers (`trusted_proxies`, `shadow_proxies`) as CIDR blocks, written as
//! blocks or plain addresses: parsed once, when the file is read.
//!
//! Used as `#[serde(with = "nets")]`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub fn serialize<S: Serializer>(nets: &[ipnet::IpNet], s: S) -> Result<S::Ok, S::Error> {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|text| {
            parse_net(&text).ok_or_else(|| {
                serde::de::Error::custom(format!("{text:?} is not an address or CIDR"))
            })
        })
        .collect()
}

/// A CIDR block, or one address as a /32 or /128.
pub fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}
