//! Active health checks: `GET path` on every upstream of a site every `interval`; an
//! upstream answering anything but 2xx or 3xx (or nothing, within `response_timeout`) is
//! skipped until a check passes again.
//!
//! The task holds only a weak reference to the upstreams, so it ends by itself once the
//! runtime that owns them is dropped (after a reload, or at shutdown).

use std::sync::{Arc, Weak};

use http::{header, HeaderValue, Request, Uri, Version};

use super::body::ReqBody;
use super::Upstreams;

pub(super) fn spawn(upstreams: &Arc<Upstreams>) {
    let Some(check) = upstreams.config.health_check.clone() else {
        return;
    };
    // `portico check` builds runtimes outside tokio; there is nothing to check then.
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Upstreams> = Arc::downgrade(upstreams);
    handle.spawn(async move {
        let mut tick = tokio::time::interval(check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(up) = weak.upgrade() else { return };
            let mut checks = tokio::task::JoinSet::new();
            for i in 0..up.balancer.peers.len() {
                let up = up.clone();
                let path = check.path.clone();
                checks.spawn(async move {
                    let healthy = probe(&up, i, &path).await;
                    up.balancer.set_healthy(i, healthy);
                });
            }
            drop(up);
            while checks.join_next().await.is_some() {}
        }
    });
}

/// One check of upstream `i`.
async fn probe(up: &Upstreams, i: usize, path: &str) -> bool {
    let peer = &up.balancer.peers[i];
    let host = up
        .config
        .host
        .clone()
        .unwrap_or_else(|| peer.authority.to_string());
    // The client requests would use, so an upstream that speaks HTTP/2 is checked over it.
    let Ok((client, authority)) = up.route(i, Some(&host), false) else {
        return false;
    };
    let Ok(uri) = Uri::builder()
        .scheme(peer.scheme.clone())
        .authority(authority)
        .path_and_query(path)
        .build()
    else {
        return false;
    };
    let Ok(mut req) = Request::builder()
        .uri(uri)
        .version(Version::HTTP_11)
        .body(ReqBody::empty())
    else {
        return false;
    };
    if let Ok(v) = HeaderValue::from_str(&host) {
        req.headers_mut().insert(header::HOST, v);
    }
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("portico-health-check"),
    );
    match tokio::time::timeout(up.config.response_timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let s = resp.status();
            s.is_success() || s.is_redirection()
        }
        Ok(Err(e)) => {
            tracing::debug!(upstream = %peer.upstream, error = %crate::error_text::ErrorChain(&e), "health check failed");
            false
        }
        Err(_) => false,
    }
}
