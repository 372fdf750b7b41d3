//! The fleet's store against a real three-member etcd cluster (Debian's etcd-server on
//! loopback ports): keys under the prefix, a listing and a watch that together miss
//! nothing, locks that end with a holder that stops renewing them, a compacted history,
//! and etcd going away: one member (nothing changes) and all of them (a clear error in
//! bounded time, then work again once they are back).

use std::time::{Duration, Instant};

use portico::config::Cluster;
use portico::store::{Change, ClusterKey, Etcd, StoreError};

use crate::support::etcd::EtcdCluster;

fn cluster(etcd: &EtcdCluster, prefix: &str) -> Cluster {
    Cluster {
        etcd: etcd.endpoints(),
        prefix: prefix.to_string(),
        node: "test".to_string(),
        key_file: "unused".into(),
        tls: None,
        config: portico::config::ConfigSource::File,
    }
}

async fn next(watch: &mut portico::store::Watch) -> Vec<Change> {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a change within 10 s")
        .expect("the watch goes on")
}

#[tokio::test]
async fn keys_listings_and_watches_under_the_prefix() {
    let etcd = EtcdCluster::start(3);
    let store = Etcd::connect(&cluster(&etcd, "/portico/t1"))
        .await
        .expect("connect");
    assert_eq!(store.get("certs/a.pem").await.expect("get"), None);
    store.put("certs/a.pem", b"A").await.expect("put");
    store.put("certs/b.pem", b"B").await.expect("put");
    store.put("other/x", b"X").await.expect("put");
    assert_eq!(
        store.get("certs/a.pem").await.expect("get").as_deref(),
        Some(&b"A"[..])
    );
    // The keys are where the prefix says, as etcdctl sees them.
    let raw = etcd.etcdctl(&["get", "/portico/t1/certs/a.pem", "--print-value-only"]);
    assert_eq!(raw.expect("etcdctl").trim(), "A");

    let listing = store.list("certs").await.expect("list");
    assert_eq!(
        listing.items,
        vec![
            ("a.pem".to_string(), b"A".to_vec()),
            ("b.pem".to_string(), b"B".to_vec())
        ]
    );
    assert!(listing.revision > 0);

    // A change between the listing and the watch is not missed.
    store.put("certs/c.pem", b"C").await.expect("put");
    let mut watch = store.watch("certs", listing.revision).await.expect("watch");
    assert_eq!(
        next(&mut watch).await,
        vec![Change::Put {
            name: "c.pem".to_string(),
            value: b"C".to_vec()
        }]
    );
    // Changes elsewhere are not seen; a delete is.
    store.put("other/y", b"Y").await.expect("put");
    assert!(store.delete("certs/a.pem").await.expect("delete"));
    assert!(!store.delete("certs/a.pem").await.expect("delete again"));
    assert_eq!(
        next(&mut watch).await,
        vec![Change::Delete {
            name: "a.pem".to_string()
        }]
    );
    // A change made with etcdctl, by another client, arrives too.
    etcd.etcdctl(&["put", "/portico/t1/certs/d.pem", "D"])
        .expect("etcdctl put");
    assert_eq!(
        next(&mut watch).await,
        vec![Change::Put {
            name: "d.pem".to_string(),
            value: b"D".to_vec()
        }]
    );
    let revision = watch.revision();
    assert!(revision > listing.revision);

    // Compacted past a watch's revision: the watch says so, and the caller lists again.
    etcd.etcdctl(&["compact", &revision.to_string()])
        .expect("compact");
    let stale = store.watch("certs", listing.revision).await;
    let err = match stale {
        Err(e) => e,
        Ok(mut w) => tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("an answer")
            .expect_err("compacted"),
    };
    assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
    assert!(err.to_string().contains("compacted"), "{err}");

    // Sealed values: what etcd holds is not the secret.
    let key = ClusterKey::from_file_bytes(&[3u8; 32]).expect("key");
    let secret = b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n";
    let at = store.key("certs/e.key");
    store
        .put("certs/e.key", &key.seal(&at, secret))
        .await
        .expect("put sealed");
    for (k, v) in etcd.dump("/portico/t1/") {
        assert!(
            !v.windows(11).any(|w| w == b"PRIVATE KEY"),
            "{k} holds a clear-text private key"
        );
    }
    let stored = store.get("certs/e.key").await.expect("get").expect("there");
    assert_eq!(key.open(&at, &stored).expect("opens"), secret.to_vec());
}

#[tokio::test]
async fn a_lock_is_held_by_one_and_ends_with_a_holder_that_stops_renewing() {
    let etcd = EtcdCluster::start(3);
    let a = Etcd::connect(&cluster(&etcd, "/portico/t2"))
        .await
        .expect("a");
    let b = Etcd::connect(&cluster(&etcd, "/portico/t2"))
        .await
        .expect("b");
    let ttl = Duration::from_secs(3);
    let held = a
        .lock("order/site1", ttl, Duration::from_secs(5))
        .await
        .expect("lock")
        .expect("free, so taken");
    // While a renews it, b does not get it, however long the lease's TTL is passed.
    let waited = b
        .lock("order/site1", ttl, Duration::from_secs(5))
        .await
        .expect("lock call");
    assert!(waited.is_none(), "two holders of one lock");
    assert!(held.is_renewed());
    // Another name is another lock.
    let other = b
        .lock("order/site2", ttl, Duration::from_secs(5))
        .await
        .expect("lock")
        .expect("another name is free");
    other.release().await.expect("release");

    // Released: b gets it at once.
    held.release().await.expect("release");
    let t = Instant::now();
    let held_b = b
        .lock("order/site1", ttl, Duration::from_secs(5))
        .await
        .expect("lock")
        .expect("released, so taken");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // A holder that dies (dropped: no release, no more renewals) lets go when its lease
    // ends: within the TTL and a little.
    drop(held_b);
    let t = Instant::now();
    let taken = a
        .lock("order/site1", ttl, Duration::from_secs(15))
        .await
        .expect("lock")
        .expect("the dead holder's lock ended");
    let took = t.elapsed();
    assert!(took < ttl + Duration::from_secs(3), "took {took:?}");
    taken.release().await.expect("release");
}

#[tokio::test]
async fn one_member_down_changes_nothing_and_all_down_is_a_clear_error_until_they_return() {
    let mut etcd = EtcdCluster::start(3);
    let store = Etcd::connect(&cluster(&etcd, "/portico/t3"))
        .await
        .expect("connect");
    store.put("k", b"1").await.expect("put");
    etcd.stop(0);
    store
        .put("k", b"2")
        .await
        .expect("put with one member down");
    assert_eq!(
        store.get("k").await.expect("get").as_deref(),
        Some(&b"2"[..])
    );

    for i in 1..3 {
        etcd.stop(i);
    }
    let t = Instant::now();
    let err = store.get("k").await.expect_err("no etcd");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let text = err.to_string();
    assert!(text.contains("did not answer"), "{text}");
    assert!(
        text.contains(&etcd.endpoints()[1]),
        "names the members: {text}"
    );

    for i in 0..3 {
        etcd.restart(i);
    }
    etcd.wait_healthy();
    // The same client works again, with what was written before.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.get("k").await {
            Ok(v) => {
                assert_eq!(v.as_deref(), Some(&b"2"[..]));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "etcd is back but: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
