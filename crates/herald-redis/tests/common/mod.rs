//! Helpers shared by the Redis broker's test binaries.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::{Broker, Delivery, Envelope, GroupName, Subscription};
use herald_redis::{RedisBroker, RedisOptions};

/// A broker with a key prefix of its own, or `None` (printing why) without REDIS_URL.
pub fn broker(test: &str) -> Option<(RedisBroker, String)> {
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

pub fn envelope(group: &GroupName, seq: u64) -> Envelope {
    Envelope {
        group: group.clone(),
        seq,
        frame: Bytes::from(format!(r#"{{"type":"notification.created","seq":{seq}}}"#)),
    }
}

pub async fn next(subscription: &mut Subscription) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a delivery within 10 s")
        .expect("subscription open")
}

pub async fn wait_connected(broker: &RedisBroker) {
    for _ in 0..100 {
        if broker.is_connected() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("broker did not connect to Redis within 5 s");
}
