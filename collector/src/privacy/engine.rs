//! Applying a region's policy to one event: consent, then drops, then pseudonyms, then
//! the IP address. Runs once per event, before the log and before the quarantine.

use std::net::IpAddr;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use tollgate_event::Event;

use super::config::{AgentMode, IpMode, OnDenied, PiiMode, PolicyConfig, PrivacyConfig};
use super::detect::{self, Detector, Scope};
use super::path::{FieldPath, Root};

/// A policy ready to apply.
#[derive(Debug)]
pub struct Policy {
    /// Region name, stamped as `region`.
    pub region: String,
    /// `name@version`, stamped as `privacy_policy`.
    pub id: String,
    drop: Vec<FieldPath>,
    pseudonymize: Vec<FieldPath>,
    ip: IpMode,
    consent: HashMap<String, Vec<String>>,
    missing_granted: bool,
    on_denied: OnDenied,
    user_agent: AgentMode,
    pii: PiiMode,
}

impl Policy {
    /// Whether this policy replaces the whole of `root` by its pseudonym.
    fn pseudonymizes(&self, root: Root) -> bool {
        self.pseudonymize.iter().any(|p| p.root == root)
    }
}

/// Keys for pseudonyms: the current one, and those still applied during a rotation.
pub struct Keys {
    pub current: (String, Hmac<Sha256>),
    pub previous: Vec<(String, Hmac<Sha256>)>,
}

impl Keys {
    /// # Errors
    /// A key shorter than 32 bytes.
    pub fn new(
        current: (String, Vec<u8>),
        previous: Vec<(String, Vec<u8>)>,
    ) -> Result<Keys, String> {
        let mac = |(id, key): (String, Vec<u8>)| {
            if key.len() < 32 {
                return Err(format!("HMAC key {id:?} is shorter than 32 bytes"));
            }
            let mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
            Ok((id, mac))
        };
        Ok(Keys {
            current: mac(current)?,
            previous: previous.into_iter().map(mac).collect::<Result<_, _>>()?,
        })
    }
}

/// What became of one event.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Keep it (possibly transformed).
    Keep {
        /// Pseudonyms made with the previous keys: key id → path → pseudonym.
        previous: Option<Map<String, Value>>,
    },
    /// Do not write it anywhere.
    Drop { reason: &'static str },
    /// The event cannot be logged under this policy as it is (its `event_id` holds
    /// personal data the policy removes, and the id must stay as sent to deduplicate):
    /// it is rejected, and its quarantine copy goes through [`Privacy::apply_raw`].
    Reject(tollgate_event::EventError),
}

/// The pseudonyms one request has made with the current key. An SDK's batch is one
/// device's, and usually one user's, so its events carry the same ids: each is keyed
/// once (an HMAC-SHA-256 costs more than looking through a few strings). Values are
/// remembered without their key: one memo serves one request under one [`Privacy`]
/// (a reload may change the key), which is how the pipeline uses it.
#[derive(Default)]
pub struct Pseudonyms {
    /// (value, pseudonym), the most recent last.
    made: Vec<(String, String)>,
}

impl Pseudonyms {
    /// How many distinct values are remembered.
    const KEEP: usize = 4;

    fn get(&mut self, mac: &Hmac<Sha256>, value: &str) -> String {
        if let Some((_, pseudonym)) = self.made.iter().rev().find(|(v, _)| v == value) {
            return pseudonym.clone();
        }
        let pseudonym = hex_mac(mac, value);
        if self.made.len() == Self::KEEP {
            self.made.remove(0);
        }
        self.made.push((value.to_owned(), pseudonym.clone()));
        pseudonym
    }
}

/// Every region's policy, and the keys.
pub struct Privacy {
    by_country: HashMap<String, Arc<Policy>>,
    /// Region name → policy, in the order of the file (for `privacy-check --region`).
    by_region: Vec<(String, Arc<Policy>)>,
    default: Arc<Policy>,
    keys: Keys,
    /// Header a trusted edge sets with the client's country, lower-case.
    pub region_header: Option<String>,
    trusted: Vec<ipnet::IpNet>,
    /// Counts PII found in free text, by detector (set by the collector).
    pii_found: Option<opentelemetry::metrics::Counter<u64>>,
}

impl Privacy {
    /// Compiles a checked configuration.
    ///
    /// # Errors
    /// Every problem of the configuration.
    pub fn new(config: &PrivacyConfig, keys: Keys) -> Result<Privacy, Vec<String>> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        let compile = |region: &str, name: &str, p: &PolicyConfig| {
            Arc::new(Policy {
                region: region.to_owned(),
                id: format!("{name}@{}", p.version),
                drop: p.drop.clone(),
                pseudonymize: p.pseudonymize.clone(),
                ip: p.ip,
                consent: p.consent.clone().into_iter().collect(),
                missing_granted: p.missing_consent_granted,
                on_denied: p.on_consent_denied,
                user_agent: p.user_agent,
                pii: p.pii,
            })
        };
        let mut by_country = HashMap::new();
        let mut by_region = Vec::new();
        let mut default = None;
        for region in &config.regions {
            let policy = compile(
                &region.name,
                &region.policy,
                &config.policies[&region.policy],
            );
            by_region.push((region.name.clone(), policy.clone()));
            for country in &region.countries {
                by_country.insert(country.to_ascii_uppercase(), policy.clone());
            }
            if region.name == config.default_region {
                default = Some(policy);
            }
        }
        let default = default.unwrap_or_else(|| {
            compile(
                &config.default_region,
                &config.default_region,
                &config.policies[&config.default_region],
            )
        });
        let trusted = config.trusted_proxies.clone();
        if !by_region
            .iter()
            .any(|(name, _)| *name == config.default_region)
        {
            by_region.push((config.default_region.clone(), default.clone()));
        }
        Ok(Privacy {
            by_country,
            by_region,
            default,
            keys,
            region_header: config
                .region_header
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            trusted,
            pii_found: None,
        })
    }

    /// Counts PII found in free text on `counter` (label `detector`).
    pub fn count_pii_on(&mut self, counter: opentelemetry::metrics::Counter<u64>) {
        self.pii_found = Some(counter);
    }

    /// The country from the edge header, believed only from a trusted proxy.
    pub fn edge_country(&self, header: Option<&str>, peer: Option<IpAddr>) -> Option<String> {
        let header = header?;
        let peer = peer?;
        self.trusted
            .iter()
            .any(|net| net.contains(&peer))
            .then(|| header.trim().to_ascii_uppercase())
    }

    /// The policy for an event: the trusted edge's country, else `context.country`,
    /// else the default region.
    pub fn policy_for(
        &self,
        edge_country: Option<&str>,
        context: &Map<String, Value>,
    ) -> &Arc<Policy> {
        let country = edge_country.map(str::to_owned).or_else(|| {
            context
                .get("country")
                .and_then(Value::as_str)
                .map(str::to_ascii_uppercase)
        });
        country
            .and_then(|c| self.by_country.get(&c))
            .unwrap_or(&self.default)
    }

    /// The policy a region name (`eu`) or a country code (`DE`, any case) selects, for
    /// dry runs.
    ///
    /// # Errors
    /// Neither a region nor a country of the file: the message lists the region names.
    pub fn policy_named(&self, name: &str) -> Result<&Arc<Policy>, String> {
        if let Some((_, policy)) = self.by_region.iter().find(|(region, _)| region == name) {
            return Ok(policy);
        }
        self.by_country
            .get(&name.to_ascii_uppercase())
            .ok_or_else(|| {
                let names: Vec<&str> = self.by_region.iter().map(|(n, _)| n.as_str()).collect();
                format!(
                    "{name:?} is neither a region nor a country of the privacy file; regions: {}",
                    names.join(", ")
                )
            })
    }

    /// Id of the key pseudonyms are made with (stamped as `privacy_key`).
    pub fn key_id(&self) -> &str {
        &self.keys.current.0
    }

    /// Applies `policy` to a valid event.
    pub fn apply(&self, policy: &Policy, event: &mut Event) -> Verdict {
        self.apply_with(policy, event, &mut Pseudonyms::default())
    }

    /// [`apply`](Self::apply) for one event of a request, with the pseudonyms the
    /// request's earlier events made.
    pub fn apply_with(&self, policy: &Policy, event: &mut Event, made: &mut Pseudonyms) -> Verdict {
        if let Some(verdict) = self.gate(policy, event) {
            return verdict;
        }
        for path in &policy.drop {
            match path.root {
                Root::Context => drop_in(&mut event.context, &path.rest),
                Root::Properties => drop_in(&mut event.properties, &path.rest),
                root => *top_level(event, root) = None,
            }
        }
        let mut previous = Map::new();
        for path in &policy.pseudonymize {
            let mut hash = |location: String, value: &str| -> String {
                for (id, mac) in &self.keys.previous {
                    let entry = previous
                        .entry(id.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(map) = entry {
                        map.insert(location.clone(), Value::String(hex_mac(mac, value)));
                    }
                }
                made.get(&self.keys.current.1, value)
            };
            match path.root {
                Root::Context => {
                    pseudonymize_in(&mut event.context, &path.rest, "context", &mut hash)
                }
                Root::Properties => {
                    pseudonymize_in(&mut event.properties, &path.rest, "properties", &mut hash)
                }
                root => {
                    if let Some(value) = top_level(event, root).as_mut() {
                        *value = hash(root.name().to_owned(), value);
                    }
                }
            }
        }
        apply_ip(policy.ip, &mut event.context);
        if policy.user_agent == AgentMode::Family
            && let Some(Value::String(agent)) = event.context.get_mut("user_agent")
        {
            *agent = agent_family(agent);
        }
        if policy.pii != PiiMode::Off {
            // Free text can be anywhere a client puts it, not only in properties.
            for root in [
                Root::UserId,
                Root::DeviceId,
                Root::SessionId,
                Root::Surface,
                Root::AppVersion,
            ] {
                if !policy.pseudonymizes(root)
                    && let Some(text) = top_level(event, root).as_mut()
                {
                    self.scrub_text(policy.pii, Scope::Identifier, text);
                }
            }
            for id in &mut event.experiment_ids {
                self.scrub_text(policy.pii, Scope::Identifier, id);
            }
            self.scrub_context(policy.pii, &mut event.context);
            self.scrub_map(policy.pii, &mut event.properties);
        }
        Verdict::Keep {
            previous: (!previous.is_empty()).then_some(previous),
        }
    }

    /// What a policy judges of an event before transforming it: an `event_id` that
    /// looks like personal data is rejected, and an event without the consent the
    /// policy requires is dropped or stripped (`on_denied`). `None`: go on.
    fn gate(&self, policy: &Policy, event: &mut Event) -> Option<Verdict> {
        if policy.pii != PiiMode::Off && detect::contains_pii(&event.event_id, Scope::Identifier) {
            return Some(Verdict::Reject(tollgate_event::EventError::new(
                tollgate_event::ErrorCode::InvalidValue,
                "/event_id",
                format!(
                    "`event_id` looks like it holds personal data, which policy {} does not let the log keep; use a random id (UUID)",
                    policy.id
                ),
            )));
        }
        if !self.consented(policy, event) {
            match policy.on_denied {
                OnDenied::Drop => {
                    return Some(Verdict::Drop {
                        reason: "consent_denied",
                    });
                }
                OnDenied::Strip => {
                    event.user_id = None;
                    event.device_id = None;
                    event.session_id = None;
                    event.context.remove("ip");
                    event.context.remove("user_agent");
                }
            }
        }
        None
    }

    /// Judges a replayed quarantined event, which passed [`apply_raw`](Self::apply_raw)
    /// under `policy` before it was quarantined: only what `apply_raw` does not do —
    /// the `event_id` check and consent — so that nothing is pseudonymized twice and a
    /// replay is no way around consent. No pseudonyms under previous keys are made
    /// (the values they would be made from are gone).
    pub fn judge_replayed(&self, policy: &Policy, event: &mut Event) -> Verdict {
        self.gate(policy, event)
            .unwrap_or(Verdict::Keep { previous: None })
    }

    /// The policy of `region` if its id is `id` (`name@version`): what a quarantined
    /// event passed, if it is still in force.
    pub fn policy_of(&self, region: &str, id: &str) -> Option<&Arc<Policy>> {
        self.by_region
            .iter()
            .map(|(_, policy)| policy)
            .chain(std::iter::once(&self.default))
            .find(|policy| policy.region == region && policy.id == id)
    }

    /// Applies the drops, pseudonyms, IP and user-agent rules, and the free-text scrub,
    /// to a rejected event as received (its fields already under their native names), so
    /// that the quarantine never holds what the policy removes from accepted events.
    /// Consent is not judged on an invalid event.
    ///
    /// A rejected event can hold anything anywhere (unknown fields included), so the
    /// free-text scrub covers every string of it, not just the known fields.
    pub fn apply_raw(&self, policy: &Policy, raw: &mut Value) {
        let Value::Object(root) = raw else { return };
        for path in &policy.drop {
            let (key, rest) = raw_path(path);
            drop_in(root, &[&[Some(key.to_owned())], rest].concat());
        }
        if policy.pii != PiiMode::Off {
            // Before the pseudonyms, so that they are not taken for digits of a card;
            // the fields pseudonymized whole are left to their hash.
            for (key, value) in root.iter_mut() {
                match key.as_str() {
                    "context" => match value {
                        Value::Object(context) => self.scrub_context(policy.pii, context),
                        other => self.scrub_value(policy.pii, other),
                    },
                    name if policy
                        .pseudonymize
                        .iter()
                        .any(|p| p.root.name() == name && p.rest.is_empty()) => {}
                    _ => self.scrub_value(policy.pii, value),
                }
            }
        }
        for path in &policy.pseudonymize {
            let (key, rest) = raw_path(path);
            let mut hash = |_: String, value: &str| hex_mac(&self.keys.current.1, value);
            pseudonymize_in(
                root,
                &[&[Some(key.to_owned())], rest].concat(),
                "",
                &mut hash,
            );
        }
        match root.get_mut("context") {
            Some(Value::Object(context)) => {
                apply_ip(policy.ip, context);
                if policy.user_agent == AgentMode::Family
                    && let Some(Value::String(agent)) = context.get_mut("user_agent")
                {
                    *agent = agent_family(agent);
                }
            }
            // A context that is not an object cannot be read for an IP: keep none of it.
            Some(_) if policy.ip != IpMode::Keep => {
                root.remove("context");
            }
            _ => {}
        }
    }

    /// HMAC-SHA256 of `digest` under the current key, hex, with the key's id: how the
    /// quarantine identifies bytes it must not keep (a line that is not JSON).
    pub fn keyed_digest(&self, digest: &[u8]) -> (String, &str) {
        let mut mac = self.keys.current.1.clone();
        mac.update(digest);
        (hex(&mac.finalize().into_bytes()), &self.keys.current.0)
    }

    /// Scrubs free text in `context`, except the IP and the user agent, which have
    /// rules of their own (and whose digits the phone pattern would misread).
    fn scrub_context(&self, mode: PiiMode, context: &mut Map<String, Value>) {
        for (key, value) in context.iter_mut() {
            if key != "ip" && key != "user_agent" {
                self.scrub_value(mode, value);
            }
        }
    }

    /// Redacts or pseudonymizes PII in every string below `map`.
    fn scrub_map(&self, mode: PiiMode, map: &mut Map<String, Value>) {
        for value in map.values_mut() {
            self.scrub_value(mode, value);
        }
    }

    fn scrub_value(&self, mode: PiiMode, value: &mut Value) {
        match value {
            Value::String(text) => self.scrub_text(mode, Scope::All, text),
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_value(mode, v)),
            Value::Object(map) => self.scrub_map(mode, map),
            _ => {}
        }
    }

    fn scrub_text(&self, mode: PiiMode, scope: Scope, text: &mut String) {
        let mut replace = |detector: Detector, found: &str| match mode {
            PiiMode::Hash => {
                let hash = hex_mac(&self.keys.current.1, found);
                format!("[{}:{}]", detector.as_str(), &hash[..16])
            }
            _ => format!("[{}]", detector.as_str()),
        };
        let mut count = |detector: Detector| {
            if let Some(counter) = &self.pii_found {
                counter.add(
                    1,
                    &[opentelemetry::KeyValue::new("detector", detector.as_str())],
                );
            }
        };
        if let Some(clean) = detect::scrub(text, scope, &mut replace, &mut count) {
            *text = clean;
        }
    }

    fn consented(&self, policy: &Policy, event: &Event) -> bool {
        let Some(required) = policy
            .consent
            .get(&event.event_name)
            .or_else(|| policy.consent.get("*"))
        else {
            return true;
        };
        required.iter().all(|category| {
            event
                .consent
                .get(category)
                .copied()
                .unwrap_or(policy.missing_granted)
        })
    }
}

fn raw_path(path: &FieldPath) -> (&'static str, &[Option<String>]) {
    (path.root.name(), &path.rest)
}

fn top_level(event: &mut Event, root: Root) -> &mut Option<String> {
    match root {
        Root::UserId => &mut event.user_id,
        Root::DeviceId => &mut event.device_id,
        Root::SessionId => &mut event.session_id,
        Root::Surface => &mut event.surface,
        Root::AppVersion => &mut event.app_version,
        Root::Context | Root::Properties => unreachable!("maps are handled by the caller"),
    }
}

/// Removes the key(s) at `path` below `map`.
fn drop_in(map: &mut Map<String, Value>, path: &[Option<String>]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if parents.is_empty() {
        match last {
            Some(key) => {
                map.remove(key);
            }
            None => map.clear(),
        }
        return;
    }
    let (first, rest) = (&parents[0], &path[1..]);
    match first {
        Some(key) => {
            if let Some(Value::Object(child)) = map.get_mut(key) {
                drop_in(child, rest);
            }
        }
        None => {
            for child in map.values_mut() {
                if let Value::Object(child) = child {
                    drop_in(child, rest);
                }
            }
        }
    }
}

/// Replaces the value(s) at `path` below `map` by their pseudonym. `hash` gets the
/// dotted location and the value's text.
fn pseudonymize_in(
    map: &mut Map<String, Value>,
    path: &[Option<String>],
    prefix: &str,
    hash: &mut dyn FnMut(String, &str) -> String,
) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let keys: Vec<String> = match first {
        Some(key) => vec![key.clone()],
        None => map.keys().cloned().collect(),
    };
    for key in keys {
        let location = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(value) = map.get_mut(&key) else {
            continue;
        };
        if rest.is_empty() {
            let text = match &mut *value {
                Value::Null => continue,
                Value::String(s) => std::mem::take(s),
                other => other.to_string(),
            };
            *value = Value::String(hash(location, &text));
        } else if let Value::Object(child) = value {
            pseudonymize_in(child, rest, &location, hash);
        }
    }
}

fn apply_ip(mode: IpMode, context: &mut Map<String, Value>) {
    match mode {
        IpMode::Keep => {}
        IpMode::Drop => {
            context.remove("ip");
        }
        IpMode::Truncate => {
            // Rewritten in place: no new string, no second lookup.
            let truncated = match context.get_mut("ip") {
                Some(Value::String(text)) => match text.trim().parse::<IpAddr>() {
                    Ok(ip) => {
                        write_ip(text, truncate_ip(ip));
                        true
                    }
                    Err(_) => false,
                },
                Some(_) => false,
                None => return,
            };
            // Not an address we can truncate: never keep it whole.
            if !truncated {
                context.remove("ip");
            }
        }
    }
}

/// "Browser on OS" from a user agent string: enough for segmenting, not for
/// fingerprinting.
pub fn agent_family(agent: &str) -> String {
    let browser = if agent.contains("Edg/") {
        "Edge"
    } else if agent.contains("OPR/") || agent.contains("Opera") {
        "Opera"
    } else if agent.contains("Firefox/") || agent.contains("FxiOS/") {
        "Firefox"
    } else if agent.contains("Chrome/") || agent.contains("CriOS/") {
        "Chrome"
    } else if agent.contains("Safari/") {
        "Safari"
    } else {
        "Other"
    };
    let os = if agent.contains("Windows") {
        "Windows"
    } else if agent.contains("iPhone") || agent.contains("iPad") || agent.contains("iOS") {
        "iOS"
    } else if agent.contains("Android") {
        "Android"
    } else if agent.contains("Mac OS X") || agent.contains("Macintosh") {
        "macOS"
    } else if agent.contains("CrOS") {
        "ChromeOS"
    } else if agent.contains("Linux") {
        "Linux"
    } else {
        "Other"
    };
    format!("{browser} on {os}")
}

/// IPv4 to its /24, IPv6 to its /48.
pub fn truncate_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

/// Replaces `out` with `ip` as text: an IPv4 address digit by digit (the formatting
/// machinery cost more than the rest of the IP rule), IPv6 as `Display` writes it.
fn write_ip(out: &mut String, ip: IpAddr) {
    use std::fmt::Write;
    out.clear();
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(itoa::Buffer::new().format(octet));
            }
        }
        IpAddr::V6(v6) => write!(out, "{v6}").expect("writing to a String cannot fail"),
    }
}

fn hex_mac(mac: &Hmac<Sha256>, value: &str) -> String {
    let mut mac = mac.clone();
    mac.update(value.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Lower-case hex of `digest`.
pub(crate) fn hex(digest: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(digest.len() * 2);
    for byte in digest {
        out.extend_from_slice(&[
            DIGITS[usize::from(byte >> 4)],
            DIGITS[usize::from(byte & 15)],
        ]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    proptest::proptest! {
        /// The hand-written address text is exactly what `Display` writes, whatever
        /// the string held before.
        #[test]
        fn an_address_is_written_as_display_writes_it(ip: IpAddr, before in ".{0,40}") {
            let mut text = before;
            write_ip(&mut text, ip);
            proptest::prop_assert_eq!(text, ip.to_string());
        }
    }

    #[test]
    fn remembered_pseudonyms_are_the_ones_the_key_makes() {
        let mac = Hmac::<Sha256>::new_from_slice(&[7; 32]).unwrap();
        let mut made = Pseudonyms::default();
        for value in [
            "device-1", "user-1", "device-1", "a", "b", "c", "d", "device-1", "user-1", "e", "a",
        ] {
            assert_eq!(made.get(&mac, value), hex_mac(&mac, value), "{value}");
            assert!(made.made.len() <= Pseudonyms::KEEP);
        }
    }

    #[test]
    fn truncation_rewrites_an_address_and_removes_anything_else() {
        let truncate = |ip: Value| {
            let mut context = Map::from_iter([("ip".to_owned(), ip)]);
            apply_ip(IpMode::Truncate, &mut context);
            context.get("ip").cloned()
        };
        assert_eq!(
            truncate(json!(" 203.0.113.77 ")),
            Some(json!("203.0.113.0"))
        );
        assert_eq!(
            truncate(json!("2001:db8:85a3:8d3:1319:8a2e:370:7348")),
            Some(json!("2001:db8:85a3::"))
        );
        assert_eq!(truncate(json!("not an address")), None);
        assert_eq!(truncate(json!(2130706433)), None);
        assert_eq!(truncate(json!(["203.0.113.77"])), None);
    }
}
