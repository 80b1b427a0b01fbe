//! Three `herald serve` processes sharing PostgreSQL and Redis, as in a deployment.
//!
//! These tests kill Redis pub/sub connections and gateway processes, so they run one at a time.

use std::collections::BTreeSet;
use std::time::Duration;

use herald_core::store::{DirectoryStore, UserRecord};
use herald_core::{GroupName, Username};
use herald_tests::cluster::Cluster;
use herald_tests::{Closed, StatusCode, WsClient};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Serializes the tests of this file: each one disturbs shared Redis connections.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Reads group events until `count` have arrived; returns their (seq, notification id, type).
async fn events(socket: &mut WsClient, count: usize) -> Vec<(u64, i64, String)> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let frame = socket.recv().await;
        let kind = frame["type"].as_str().unwrap_or_default().to_owned();
        if kind.starts_with("notification.") {
            received.push((
                frame["seq"].as_u64().expect("seq"),
                frame["notification"]["id"].as_i64().expect("id"),
                kind,
            ));
        }
    }
    received
}

/// Posts a notification from ops to finance through one instance.
async fn send(cluster: &Cluster, instance: usize, token: &str, content: &str) -> Value {
    let response = cluster
        .client
        .post(cluster.instances[instance].url("/api/notifications/"))
        .bearer_auth(token)
        .json(&json!({"content": content, "receiver_group": "finance"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("notification JSON")
}

fn assert_exactly_once_in_order(received: &[(u64, i64, String)], total: u64) {
    let seqs: Vec<u64> = received.iter().map(|e| e.0).collect();
    let expected: Vec<u64> = (1..=total).collect();
    assert_eq!(seqs, expected, "every event exactly once, in seq order");
}

/// Sends `total` notifications, one every `pause`, through the instances in turn.
fn spawn_writer(
    cluster: &Cluster,
    token: String,
    total: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    let client = cluster.client.clone();
    let urls: Vec<String> = cluster
        .instances
        .iter()
        .map(|instance| instance.url("/api/notifications/"))
        .collect();
    tokio::spawn(async move {
        for n in 0..total {
            // Round robin over the instances that are still up.
            let mut sent = false;
            for attempt in 0..urls.len() {
                let url = &urls[(n + attempt) % urls.len()];
                let response = client
                    .post(url)
                    .bearer_auth(&token)
                    .json(&json!({"content": format!("#{n}"), "receiver_group": "finance"}))
                    .header("Idempotency-Key", format!("writer-{n}"))
                    .send()
                    .await;
                if let Ok(response) = response
                    && response.status().is_success()
                {
                    sent = true;
                    break;
                }
            }
            assert!(sent, "notification #{n} was not accepted by any instance");
            tokio::time::sleep(pause).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_instances_in_order() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let mut sockets = Vec::new();
    for instance in 0..3 {
        sockets.push(
            cluster
                .ws(instance, "fin", "/ws/notifications/finance/")
                .await,
        );
        sockets.push(
            cluster
                .ws(instance, "ops", "/ws/notifications/operations/")
                .await,
        );
    }
    let ops = cluster.token("ops").await;
    let fin = cluster.token("fin").await;

    let created = send(&cluster, 0, &ops, "跨实例通知").await;
    let id = created["id"].as_i64().unwrap();
    let confirmed = cluster
        .client
        .post(cluster.instances[1].url(&format!("/api/notifications/{id}/confirm/")))
        .bearer_auth(&fin)
        .send()
        .await
        .expect("confirm");
    assert_eq!(confirmed.status(), StatusCode::OK);

    for socket in &mut sockets {
        let received = events(socket, 2).await;
        assert_eq!(
            received,
            [
                (1, id, "notification.created".to_owned()),
                (2, id, "notification.confirmed".to_owned()),
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connection_loss_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let mut sockets = Vec::new();
    for instance in 0..3 {
        sockets.push(
            cluster
                .ws(instance, "fin", "/ws/notifications/finance/")
                .await,
        );
    }
    const TOTAL: usize = 60;
    let writer = spawn_writer(
        &cluster,
        cluster.token("ops").await,
        TOTAL,
        Duration::from_millis(25),
    );

    let redis = redis::Client::open(cluster.redis_url.as_str()).expect("Redis URL");
    let mut admin = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut admin)
            .await
            .expect("CLIENT KILL");
        assert!(killed >= 3, "each instance's subscriber was killed");
    }

    writer.await.expect("writer");
    for socket in &mut sockets {
        let received = events(socket, TOTAL).await;
        assert_exactly_once_in_order(&received, TOTAL as u64);
        socket.assert_nothing_pending().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_instance_clients_resume_elsewhere() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(mut cluster) = Cluster::start(3).await else {
        return;
    };
    let mut socket = cluster.ws(2, "fin", "/ws/notifications/finance/").await;
    const TOTAL: usize = 40;
    let writer = spawn_writer(
        &cluster,
        cluster.token("ops").await,
        TOTAL,
        Duration::from_millis(25),
    );

    let mut received = events(&mut socket, 10).await;
    cluster.instances[2].kill();
    assert_eq!(socket.closed(Duration::from_secs(10)).await, Closed::Abrupt);

    let since = received.last().expect("events before the crash").0;
    let mut resumed = cluster
        .ws(
            1,
            "fin",
            &format!("/ws/notifications/finance/?since={since}"),
        )
        .await;
    writer.await.expect("writer");
    received.extend(events(&mut resumed, TOTAL - received.len()).await);

    assert_exactly_once_in_order(&received, TOTAL as u64);
    resumed.assert_nothing_pending().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_confirmations_have_one_winner() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let finance: BTreeSet<GroupName> = [GroupName::parse("finance").unwrap()].into();
    let mut tokens = Vec::new();
    for n in 0..50 {
        let user = UserRecord {
            username: Username::parse(&format!("clerk{n}")).unwrap(),
            password_hash: "not-used-by-this-test".into(),
            groups: finance.clone(),
            admin: false,
            created_at: chrono::Utc::now(),
        };
        cluster.store.create_user(&user).await.expect("create user");
        tokens.push(
            cluster
                .tokens
                .issue(&user, Duration::from_secs(600))
                .unwrap()
                .0,
        );
    }
    let ops = cluster.token("ops").await;
    let id = send(&cluster, 0, &ops, "只能确认一次").await["id"]
        .as_i64()
        .unwrap();

    let attempts: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(n, token)| {
            let client = cluster.client.clone();
            let url = cluster.instances[n % 3].url(&format!("/api/notifications/{id}/confirm/"));
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("confirm");
                let status = response.status();
                let body: Value = response.json().await.expect("JSON body");
                (status, body)
            })
        })
        .collect();
    let mut results = Vec::new();
    for attempt in attempts {
        results.push(attempt.await.expect("attempt"));
    }

    let winners: Vec<&Value> = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one confirmation wins");
    let winner = winners[0]["confirmed_by"].as_str().unwrap();
    for (status, body) in results
        .iter()
        .filter(|(status, _)| *status != StatusCode::OK)
    {
        assert_eq!(*status, StatusCode::CONFLICT);
        assert_eq!(body["confirmed_by"], winner);
    }
}
