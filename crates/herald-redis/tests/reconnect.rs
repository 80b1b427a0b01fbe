//! The Redis broker's recovery from a lost connection, against the Redis server named by
//! REDIS_URL. It kills every pub/sub client of that server, so it lives in a test binary of its
//! own, which cargo does not run alongside the other Redis tests.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::{Broker, Delivery, Envelope, GroupName, Subscription};
use herald_redis::{RedisBroker, RedisOptions};

/// A broker with a key prefix of its own, or `None` (printing why) without REDIS_URL.
fn broker(test: &str) -> Option<(RedisBroker, String)> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("skipped: set REDIS_URL=redis://127.0.0.1:6379/0 to run the Redis tests");
        return None;
    };
    let prefix = format!("herald-test:{test}:{}:", std::process::id());
    let broker = RedisBroker::start(RedisOptions {
        url: url.clone(),
        prefix,
    })
    .expect("valid REDIS_URL");
    Some((broker, url))
}

fn envelope(group: &GroupName, seq: u64) -> Envelope {
    Envelope {
        group: group.clone(),
        seq,
        frame: Bytes::from(format!(r#"{{"type":"notification.created","seq":{seq}}}"#)),
    }
}

async fn next(subscription: &mut Subscription) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a delivery within 10 s")
        .expect("subscription open")
}

async fn wait_connected(broker: &RedisBroker) {
    for _ in 0..100 {
        if broker.is_connected() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("broker did not connect to Redis within 5 s");
}

#[tokio::test]
async fn lost_connection_reports_gaps_and_recovers() {
    let Some((broker, url)) = broker("killed") else {
        return;
    };
    wait_connected(&broker).await;
    let finance = GroupName::parse("finance").unwrap();
    let mut subscription = broker.subscribe(&finance).await.unwrap();

    let client = redis::Client::open(url).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1, "at least this broker's subscriber was killed");

    assert_eq!(next(&mut subscription).await, Delivery::Gap, "gap on loss");
    assert_eq!(
        next(&mut subscription).await,
        Delivery::Gap,
        "gap on recovery"
    );
    assert!(broker.is_connected());
    broker.publish(envelope(&finance, 3)).await.unwrap();
    assert_eq!(
        next(&mut subscription).await,
        Delivery::Event(envelope(&finance, 3))
    );
}
