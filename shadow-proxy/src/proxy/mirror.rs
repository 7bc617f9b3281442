//! The shadow side: a thread of its own drains the copy queue, sends each copy to the
//! shadow (and the replica), and hands the answers to the comparison.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use super::priority::lower_priority;
use super::{Copy, ProxyConfig, SHADOW_HEADER, upstream_uri};
use crate::compare::{Comparison, Dropped, Reply, Side};

/// Starts the shadow side on a thread of its own, with its own runtime, connection
/// pool and a lower CPU priority: copying, sending and comparing never take a worker
/// (or a core's time) from the primary path, and on a busy machine they yield first.
pub(super) fn spawn_mirror(
    rx: mpsc::Receiver<Copy>,
    shadow: http::Uri,
    replica: Option<http::Uri>,
    config: ProxyConfig,
    comparison: Arc<Comparison>,
    queued_bytes: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("tollgate-shadow".into())
        .spawn(move || {
            lower_priority(config.shadow_priority);
            runtime.block_on(mirror(
                rx,
                shadow,
                replica,
                config,
                comparison,
                queued_bytes,
            ));
        })?;
    Ok(())
}

/// What an upstream answered to a copy.
struct Answered {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answered {
    fn reply(&self) -> Reply<'_> {
        Reply {
            status: self.status,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// Sends a copy to an upstream within `timeout` and reads its whole answer; a failure
/// is counted as `<side>_error` or `<side>_timeout`.
async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &http::Uri,
    copy: &Copy,
    side: Side,
    timeout: Duration,
    comparison: &Comparison,
) -> Option<Answered> {
    let started = std::time::Instant::now();
    let (name, failed, timed_out) = if side == Side::Replica {
        ("replica", Dropped::ReplicaError, Dropped::ReplicaTimeout)
    } else {
        ("shadow", Dropped::ShadowError, Dropped::ShadowTimeout)
    };
    match tokio::time::timeout(timeout, send_once(client, base, copy)).await {
        Ok(Ok(answered)) => {
            comparison.latency(side, started.elapsed());
            Some(answered)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, side = name, "copy failed");
            comparison.dropped(failed);
            None
        }
        Err(_) => {
            comparison.dropped(timed_out);
            None
        }
    }
}

/// Why a copy did not get an answer.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("sending: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("reading the answer: {0}")]
    Body(#[from] hyper::Error),
}

async fn send_once(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &http::Uri,
    copy: &Copy,
) -> Result<Answered, SendError> {
    let mut request = Request::new(Full::new(copy.body.clone()));
    *request.method_mut() = copy.method.clone();
    *request.uri_mut() = upstream_uri(base, &copy.path);
    *request.headers_mut() = copy.headers.clone();
    request
        .headers_mut()
        .insert(SHADOW_HEADER, http::HeaderValue::from_static("1"));
    let (parts, body) = client.request(request).await?.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answered {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Drains the copy queue into the shadow, `shadow_concurrency` at a time.
async fn mirror(
    mut rx: mpsc::Receiver<Copy>,
    shadow: http::Uri,
    replica: Option<http::Uri>,
    config: ProxyConfig,
    comparison: Arc<Comparison>,
    queued_bytes: Arc<AtomicUsize>,
) {
    // The shadow gets its own pool: it never shares a connection with the primary.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let permits = Arc::new(tokio::sync::Semaphore::new(
        config.shadow_concurrency.max(1),
    ));
    while let Some(copy) = rx.recv().await {
        queued_bytes.fetch_sub(copy.size(), Ordering::Relaxed);
        // The body as the collector reads it (gzip, PostHog's layers), for sampling
        // and the comparison; a body that cannot be read counts no events.
        let readable =
            match crate::compare::readable_body(copy.path.as_str(), &copy.headers, &copy.body) {
                Some(std::borrow::Cow::Borrowed(_)) => copy.body.clone(),
                Some(std::borrow::Cow::Owned(bytes)) => Bytes::from(bytes),
                None => Bytes::new(),
            };
        if !sampled(&config, copy.path.as_str(), &readable) {
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (client, shadow, replica, comparison) = (
            client.clone(),
            shadow.clone(),
            replica.clone(),
            comparison.clone(),
        );
        let timeout = config.shadow_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let to_shadow = send(&client, &shadow, &copy, Side::Shadow, timeout, &comparison);
            let to_replica = async {
                match &replica {
                    Some(replica) => {
                        send(&client, replica, &copy, Side::Replica, timeout, &comparison)
                            .await
                            .map(Some)
                    }
                    None => Some(None),
                }
            };
            // Every compared copy has all its answers: a copy the replica missed would
            // otherwise read as noise.
            let (Some(new), Some(again)) = tokio::join!(to_shadow, to_replica) else {
                return;
            };
            let primary = Reply {
                status: copy.primary_status,
                headers: &copy.primary_headers,
                body: &copy.primary_body,
            };
            comparison.record(
                copy.path.as_str(),
                &readable,
                primary,
                new.reply(),
                again.as_ref().map(Answered::reply),
            );
        });
    }
}

/// Whether a request is mirrored: a stable hash of its first event's sample key
/// (falling back to its event id) against the sample rate. The events are read as the
/// collector maps them, so the keys mean the same in every protocol (Segment's
/// `userId`, PostHog's `distinct_id` and Snowplow's `uid` are all `user_id`).
fn sampled(config: &ProxyConfig, target: &str, body: &Bytes) -> bool {
    if config.sample_rate >= 1.0 {
        return true;
    }
    let events = crate::compare::events_of(target, body);
    let key = events.first().and_then(|first| {
        let key = match config.sample_key.as_str() {
            "user_id" => first.user_id.as_ref(),
            "device_id" => first.device_id.as_ref(),
            _ => None,
        };
        key.or(first.event_id.as_ref())
    });
    stable_fraction(key.map_or("", |k| k.as_ref())) < config.sample_rate
}

/// A value in [0, 1) from a hash that is the same in every process and release, so the
/// same users are mirrored across restarts and replicas: FNV-1a, then the splitmix64
/// finalizer (FNV alone barely moves its high bits when only the last byte differs,
/// and ids like `user-1`, `user-2` do exactly that).
pub fn stable_fraction(key: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::{sampled, stable_fraction};

    #[test]
    fn a_user_is_sampled_alike_whatever_protocol_their_events_came_in() {
        let config = crate::proxy::ProxyConfig {
            sample_rate: 0.5,
            ..crate::proxy::ProxyConfig::default()
        };
        let mut kept = 0;
        for i in 0..200 {
            let user = format!("user-{i}");
            let bodies = [
                (
                    "/v1/events",
                    format!(r#"{{"events":[{{"event_id":"e-{i}","user_id":"{user}"}}]}}"#),
                ),
                (
                    "/v1/batch",
                    format!(r#"{{"batch":[{{"type":"track","event":"x","userId":"{user}"}}]}}"#),
                ),
                (
                    "/batch",
                    format!(r#"{{"batch":[{{"event":"x","distinct_id":"{user}"}}]}}"#),
                ),
                (
                    "/com.snowplowanalytics.snowplow/tp2",
                    format!(r#"{{"data":[{{"e":"pv","uid":"{user}"}}]}}"#),
                ),
            ];
            let decisions: Vec<bool> = bodies
                .iter()
                .map(|(path, body)| sampled(&config, path, &bytes::Bytes::from(body.clone())))
                .collect();
            assert!(
                decisions.iter().all(|d| *d == decisions[0]),
                "{user}: {decisions:?}"
            );
            kept += usize::from(decisions[0]);
        }
        assert!((70..130).contains(&kept), "{kept}");
    }

    #[test]
    fn similar_keys_spread_evenly_and_stably() {
        let below = (0..10_000)
            .filter(|i| stable_fraction(&format!("user-{i}")) < 0.5)
            .count();
        assert!((4_800..5_200).contains(&below), "{below}");
        // Fixed across processes and releases: sampled users stay sampled.
        assert_eq!(stable_fraction("user-1"), stable_fraction("user-1"));
        assert!(
            (0.76..0.77).contains(&stable_fraction("user-1")),
            "{}",
            stable_fraction("user-1")
        );
    }
}
