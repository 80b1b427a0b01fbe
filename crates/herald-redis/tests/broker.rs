//! The Redis broker against a real Redis server named by REDIS_URL.

mod common;

use std::time::Duration;

use common::{broker, envelope, next, wait_connected};
use futures_util::StreamExt;
use herald_core::{Broker, Delivery, GroupName, UserSignal, UserSignalKind, Username};
use herald_redis::{RedisBroker, RedisOptions};

#[tokio::test]
async fn events_reach_subscribers_of_their_group_only() {
    let Some((broker, _)) = broker("fanout") else {
        return;
    };
    wait_connected(&broker).await;
    let finance = GroupName::parse("finance").unwrap();
    let hr = GroupName::parse("hr").unwrap();
    let mut first = broker.subscribe(&finance).await.unwrap();
    let mut second = broker.subscribe(&finance).await.unwrap();
    let mut other = broker.subscribe(&hr).await.unwrap();

    broker.publish(envelope(&finance, 1)).await.unwrap();
    broker.publish(envelope(&hr, 1)).await.unwrap();

    assert_eq!(
        next(&mut first).await,
        Delivery::Event(envelope(&finance, 1))
    );
    assert_eq!(
        next(&mut second).await,
        Delivery::Event(envelope(&finance, 1))
    );
    assert_eq!(next(&mut other).await, Delivery::Event(envelope(&hr, 1)));
}

#[tokio::test]
async fn events_cross_between_brokers() {
    let Some((publisher, url)) = broker("cross") else {
        return;
    };
    let prefix = format!("herald-test:cross:{}:", std::process::id());
    let subscriber = RedisBroker::start(RedisOptions { url, prefix }).unwrap();
    wait_connected(&subscriber).await;
    wait_connected(&publisher).await;
    let finance = GroupName::parse("finance").unwrap();
    let mut subscription = subscriber.subscribe(&finance).await.unwrap();
    let mut signals = subscriber.subscribe_signals().await.unwrap();

    publisher.publish(envelope(&finance, 7)).await.unwrap();
    let signal = UserSignal {
        username: Username::parse("fin").unwrap(),
        kind: UserSignalKind::ReadStateChanged,
    };
    publisher.signal_user(signal.clone()).await.unwrap();

    assert_eq!(
        next(&mut subscription).await,
        Delivery::Event(envelope(&finance, 7))
    );
    let received = tokio::time::timeout(Duration::from_secs(10), signals.next())
        .await
        .expect("a signal within 10 s");
    assert_eq!(received, Some(signal));
}

#[tokio::test]
async fn unreachable_redis_fails_publish_without_hanging() {
    let broker = RedisBroker::start(RedisOptions {
        // Port 1 on loopback: nothing listens there, so connecting fails at once.
        url: "redis://127.0.0.1:1/0".into(),
        prefix: "herald-test:unreachable:".into(),
    })
    .unwrap();
    let finance = GroupName::parse("finance").unwrap();

    let result = tokio::time::timeout(
        Duration::from_secs(10),
        broker.publish(envelope(&finance, 1)),
    )
    .await
    .expect("publish returns within 10 s");

    assert!(result.is_err());
    assert!(!broker.is_connected());
    let subscribed = tokio::time::timeout(Duration::from_secs(10), broker.subscribe(&finance))
        .await
        .expect("subscribe returns within 10 s");
    assert!(
        subscribed.is_ok(),
        "subscriptions wait for Redis in the background"
    );
}
