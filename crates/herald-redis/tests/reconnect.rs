//! The Redis broker's recovery from a lost connection, against the Redis server named by
//! REDIS_URL. It kills every pub/sub client of that server, so it lives in a test binary of its
//! own, which cargo does not run alongside the other Redis tests.

mod common;

use common::{broker, envelope, next, wait_connected};
use herald_core::{Broker, Delivery, GroupName};

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
