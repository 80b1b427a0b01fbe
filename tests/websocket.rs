//! Live delivery over WebSocket: events, commands, resume, limits and closing.

use std::time::Duration;

use herald_gateway::realtime::RealtimeOptions;
use herald_tests::{Backend, Closed, StatusCode, TestApp, WsClient, backend_tests};
use serde_json::json;

/// Sends from ops to finance over REST and returns the notification id.
async fn send(app: &TestApp, content: &str) -> i64 {
    app.send("ops", content, "finance").await["id"]
        .as_i64()
        .expect("id")
}

/// Receives frames until `count` group events have arrived; returns (group, seq, id, type).
async fn events(socket: &mut WsClient, count: usize) -> Vec<(String, u64, i64, String)> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let frame = socket.recv().await;
        let kind = frame["type"].as_str().unwrap_or_default().to_owned();
        if !kind.starts_with("notification.") {
            continue;
        }
        received.push((
            frame["group"].as_str().expect("group").to_owned(),
            frame["seq"].as_u64().expect("seq"),
            frame["notification"]["id"].as_i64().expect("id"),
            kind,
        ));
    }
    received
}

fn assert_contiguous(seqs: &[u64], first: u64) {
    let expected: Vec<u64> = (first..first + seqs.len() as u64).collect();
    assert_eq!(seqs, expected.as_slice(), "seqs must be contiguous");
}

backend_tests! {
    async fn rest_changes_reach_both_groups(app: TestApp) {
        let mut fin = app.ws("fin", "/ws/notifications/finance/").await;
        let mut ops = app.ws("ops", "/ws/notifications/operations/").await;
        let mut hr = app.ws("hr", "/ws/notifications/hr/").await;

        let id = send(&app, "月底对账 🧾").await;

        let created = fin.recv_type("notification.created").await;
        assert_eq!(created["group"], "finance");
        assert_eq!(created["seq"], 1);
        assert_eq!(created["notification"]["id"], id);
        assert_eq!(created["notification"]["content"], "月底对账 🧾");
        assert_eq!(created["notification"]["status"], "pending");
        assert!(created["notification"].get("read").is_none());
        let created = ops.recv_type("notification.created").await;
        assert_eq!(created["group"], "operations");
        assert_eq!(created["seq"], 1);

        let confirm = app.post("fin", &format!("/api/notifications/{id}/confirm/"), json!({})).await;
        assert_eq!(confirm.status, StatusCode::OK);

        let confirmed = ops.recv_type("notification.confirmed").await;
        assert_eq!(confirmed["seq"], 2);
        assert_eq!(confirmed["notification"]["confirmed_by"], "fin");
        assert_eq!(confirmed["notification"]["status"], "confirmed");
        let confirmed = fin.recv_type("notification.confirmed").await;
        assert_eq!(confirmed["seq"], 2);
        hr.assert_nothing_pending().await;
    }

    async fn batch_confirm_reaches_both_groups(app: TestApp) {
        let first = send(&app, "one").await;
        let second = send(&app, "two").await;
        let mut ops = app.ws("ops", "/ws/notifications/operations/?since=2").await;

        let reply = app.post("fin", "/api/notifications/confirm/", json!({"ids": [first, second]})).await;
        assert_eq!(reply.status, StatusCode::OK);

        let received = events(&mut ops, 2).await;
        let ids: Vec<i64> = received.iter().map(|e| e.2).collect();
        assert_eq!(ids, [first, second]);
        assert!(received.iter().all(|e| e.3 == "notification.confirmed"));
        assert_contiguous(&received.iter().map(|e| e.1).collect::<Vec<_>>(), 3);
    }

    async fn socket_commands_send_and_confirm(app: TestApp) {
        let mut ops = app.ws("ops", "/ws/notifications/operations/").await;
        let mut fin = app.ws("fin", "/ws/notifications/finance/").await;

        ops.send(json!({
            "type": "send_notification",
            "content": "请确认付款",
            "receiver_group": "finance",
            "priority": "urgent",
            "request_id": "send-1",
        })).await;
        let mut ack = None;
        let mut created = None;
        for _ in 0..2 {
            let frame = ops.recv().await;
            match frame["type"].as_str() {
                Some("ack") => ack = Some(frame),
                Some("notification.created") => created = Some(frame),
                _ => panic!("unexpected frame {frame}"),
            }
        }
        let ack = ack.expect("ack");
        assert_eq!(ack["request_id"], "send-1");
        assert_eq!(ack["notification"]["priority"], "urgent");
        let id = ack["notification"]["id"].as_i64().unwrap();
        assert_eq!(created.expect("created event")["notification"]["id"], id);

        let created = fin.recv_type("notification.created").await;
        assert_eq!(created["notification"]["id"], id);

        fin.send(json!({"type": "confirm_notification", "notification_id": id, "request_id": 9})).await;
        let frames = [fin.recv().await, fin.recv().await];
        let ack = frames.iter().find(|f| f["type"] == "ack").expect("ack");
        assert_eq!(ack["request_id"], 9);
        assert_eq!(ack["notification"]["confirmed_by"], "fin");
        assert!(frames.iter().any(|f| f["type"] == "notification.confirmed"));

        let confirmed = ops.recv_type("notification.confirmed").await;
        assert_eq!(confirmed["notification"]["id"], id);

        let mut fin2 = app.ws("fin2", "/ws/notifications/finance/?since=2").await;
        fin2.send(json!({"type": "confirm_notification", "notification_id": id, "request_id": "late"})).await;
        let error = fin2.recv_type("error").await;
        assert_eq!(error["request_id"], "late");
        assert_eq!(error["code"], "already_confirmed");
        assert_eq!(error["confirmed_by"], "fin");
    }

    async fn command_errors_keep_socket_open(app: TestApp) {
        let mut ops = app.ws("ops", "/ws/notifications/operations/").await;

        ops.send_text("{not json".into()).await;
        assert_eq!(ops.recv_type("error").await["code"], "malformed_json");

        ops.send(json!({"type": "subscribe", "request_id": 1})).await;
        let error = ops.recv_type("error").await;
        assert_eq!(error["code"], "unknown_type");
        assert_eq!(error["request_id"], 1);

        ops.send(json!({"type": "send_notification", "receiver_group": "finance", "request_id": 2})).await;
        let error = ops.recv_type("error").await;
        assert_eq!(error["code"], "invalid_field");
        assert_eq!(error["field"], "content");

        ops.send(json!({"type": "send_notification", "content": "x", "receiver_group": "nowhere"})).await;
        let error = ops.recv_type("error").await;
        assert_eq!(error["code"], "unknown_group");
        assert_eq!(error["field"], "receiver_group");

        ops.send(json!({"type": "send_notification", "content": "   ", "receiver_group": "finance"})).await;
        assert_eq!(ops.recv_type("error").await["field"], "content");

        ops.send(json!({"type": "send_notification", "content": 5, "receiver_group": "finance"})).await;
        assert_eq!(ops.recv_type("error").await["field"], "content");

        ops.send(json!({"type": "send_notification", "content": "x", "receiver_group": "operations"})).await;
        assert_eq!(ops.recv_type("error").await["code"], "forbidden");

        ops.send(json!({"type": "confirm_notification", "notification_id": "abc"})).await;
        assert_eq!(ops.recv_type("error").await["field"], "notification_id");

        ops.send(json!({"type": "confirm_notification", "notification_id": 999_999})).await;
        assert_eq!(ops.recv_type("error").await["code"], "not_found");

        ops.send(json!({"type": "ping", "request_id": "still-open"})).await;
        assert_eq!(ops.recv().await, json!({"type": "pong", "request_id": "still-open"}));
    }

    async fn handshake_refusals_come_before_upgrade(app: TestApp) {
        let fin = app.token("fin").await;

        let missing = WsClient::connect(&app.ws_url("/ws/notifications/finance/"), &[]).await;
        assert_eq!(missing.err().map(|s| s.as_u16()), Some(401));

        let bad = app.ws_with_token("not-a-token", "/ws/notifications/finance/").await;
        assert_eq!(bad.err().map(|s| s.as_u16()), Some(401));

        let foreign = app.ws_with_token(&fin, "/ws/notifications/operations/").await;
        assert_eq!(foreign.err().map(|s| s.as_u16()), Some(403));

        let unknown = app.ws_with_token(&fin, "/ws/notifications/nowhere/").await;
        assert_eq!(unknown.err().map(|s| s.as_u16()), Some(404));

        // A token may name a group that storage lacks. Joining it through the all-groups
        // endpoint must not make the group look real to the next socket.
        let ghost = app.token_with_groups("fin", &["finance", "ghost"], Duration::from_secs(60));
        let _all = app.ws_with_token(&ghost, "/ws/notifications/").await.expect("all-groups handshake");
        let unknown = app.ws_with_token(&ghost, "/ws/notifications/ghost/").await;
        assert_eq!(unknown.err().map(|s| s.as_u16()), Some(404));
        let known = app.ws_with_token(&fin, "/ws/notifications/finance/").await;
        assert!(known.is_ok(), "a known group opens");
        let again = app.ws_with_token(&fin, "/ws/notifications/finance/").await;
        assert!(again.is_ok(), "a remembered group opens without a lookup");

        let bearer = format!("Bearer {fin}");
        let cross_site = WsClient::connect(
            &app.ws_url("/ws/notifications/finance/"),
            &[("authorization", &bearer), ("origin", "https://evil.example")],
        ).await;
        assert_eq!(cross_site.err().map(|s| s.as_u16()), Some(403));

        let host = app.base.trim_start_matches("http://").to_owned();
        let same_site = WsClient::connect(
            &app.ws_url("/ws/notifications/finance/"),
            &[("authorization", &bearer), ("origin", &format!("http://{host}"))],
        ).await;
        assert!(same_site.is_ok());

        let plain = app.get("fin", "/ws/notifications/finance/").await;
        assert_eq!(plain.status, StatusCode::UPGRADE_REQUIRED);
        assert_eq!(plain.body["code"], "upgrade_required");
    }

    async fn token_in_query_is_accepted(app: TestApp) {
        let token = app.token("fin").await;
        let url = app.ws_url(&format!("/ws/notifications/finance/?token={token}"));

        let mut socket = WsClient::connect(&url, &[]).await.expect("handshake");

        socket.assert_nothing_pending().await;
    }

    async fn all_groups_stream_carries_each_group(app: TestApp) {
        let token = app.token_with_groups("boss", &["operations", "finance"], Duration::from_secs(600));
        let mut socket = app.ws_with_token(&token, "/ws/notifications/").await.expect("handshake");

        let id = send(&app, "两个组都能看到").await;

        let mut received = events(&mut socket, 2).await;
        received.sort();
        assert_eq!(received[0].0, "finance");
        assert_eq!(received[1].0, "operations");
        assert!(received.iter().all(|e| e.1 == 1 && e.2 == id));
        socket.assert_nothing_pending().await;
    }

    async fn all_groups_since_resumes_each_group(app: TestApp) {
        for n in 0..3 {
            send(&app, &format!("before {n}")).await;
        }
        let token = app.token_with_groups("boss", &["operations", "finance"], Duration::from_secs(600));

        let mut socket = app
            .ws_with_token(&token, "/ws/notifications/?since=finance:1,operations:3")
            .await
            .expect("handshake");

        let received = events(&mut socket, 2).await;
        assert_eq!(received.iter().map(|e| (e.0.as_str(), e.1)).collect::<Vec<_>>(), [("finance", 2), ("finance", 3)]);
        socket.assert_nothing_pending().await;
    }

    async fn resume_is_exact_while_writers_run(app: TestApp) {
        const TOTAL: usize = 60;
        let mut writers = Vec::new();
        for writer in 0..3 {
            let client = app.client.clone();
            let url = app.url("/api/notifications/");
            let token = app.token("ops").await;
            writers.push(tokio::spawn(async move {
                for n in 0..TOTAL / 3 {
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"content": format!("writer {writer} #{n}"), "receiver_group": "finance"}))
                        .send()
                        .await
                        .expect("POST");
                    assert_eq!(response.status(), StatusCode::CREATED);
                }
            }));
        }

        let mut seqs = Vec::new();
        let mut ids = Vec::new();
        let mut since = 0;
        while seqs.len() < TOTAL {
            let mut socket = app.ws("fin", &format!("/ws/notifications/finance/?since={since}")).await;
            // Read a few events per connection, then drop the socket mid-stream.
            let take = (TOTAL - seqs.len()).min(7);
            for (_, seq, id, _) in events(&mut socket, take).await {
                seqs.push(seq);
                ids.push(id);
            }
            since = *seqs.last().unwrap();
            drop(socket);
        }
        for writer in writers {
            writer.await.expect("writer");
        }

        assert_contiguous(&seqs, 1);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), TOTAL, "every notification exactly once");
        let mut last = app.ws("fin", &format!("/ws/notifications/finance/?since={since}")).await;
        last.assert_nothing_pending().await;
    }

    async fn since_from_groups_listing_misses_nothing(app: TestApp) {
        send(&app, "already listed").await;
        let groups = app.get("fin", "/api/groups/").await;
        let seq = groups.body[0]["seq"].as_u64().expect("seq");
        assert_eq!(seq, 1);
        let after = send(&app, "sent between list and connect").await;

        let mut socket = app.ws("fin", &format!("/ws/notifications/finance/?since={seq}")).await;

        let replayed = socket.recv_type("notification.created").await;
        assert_eq!(replayed["seq"], 2);
        assert_eq!(replayed["notification"]["id"], after);
        socket.assert_nothing_pending().await;
    }

    async fn since_ahead_requires_resync(app: TestApp) {
        send(&app, "one").await;

        let mut socket = app.ws("fin", "/ws/notifications/finance/?since=50").await;

        let error = socket.recv_type("error").await;
        assert_eq!(error["code"], "resync_required");
        assert_eq!(error["group"], "finance");
        assert_eq!(error["seq"], 1);
        send(&app, "two").await;
        let live = socket.recv_type("notification.created").await;
        assert_eq!(live["seq"], 2);
    }

    async fn since_not_a_number_is_an_error_frame(app: TestApp) {
        let mut socket = app.ws("fin", "/ws/notifications/finance/?since=yesterday").await;

        let error = socket.recv_type("error").await;
        assert_eq!(error["code"], "invalid_field");
        assert_eq!(error["field"], "since");
        send(&app, "live").await;
        assert_eq!(socket.recv_type("notification.created").await["seq"], 1);
    }

    async fn read_state_changes_push_unread_count(app: TestApp) {
        let first = send(&app, "one").await;
        send(&app, "two").await;
        let mut tab1 = app.ws("fin", "/ws/notifications/finance/?since=2").await;
        let mut tab2 = app.ws("fin", "/ws/notifications/finance/?since=2").await;
        let mut other = app.ws("fin2", "/ws/notifications/finance/?since=2").await;

        let reply = app.post("fin", &format!("/api/notifications/{first}/read/"), json!({})).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);

        assert_eq!(tab1.recv_type("unread_count").await["count"], 1);
        assert_eq!(tab2.recv_type("unread_count").await["count"], 1);

        let reply = app.post("fin", "/api/notifications/read/", json!({"all": true})).await;
        assert_eq!(reply.body["updated"], 1);
        assert_eq!(tab1.recv_type("unread_count").await["count"], 0);
        assert_eq!(tab2.recv_type("unread_count").await["count"], 0);
        other.assert_nothing_pending().await;
    }

    async fn concurrent_writers_keep_seq_order(app: TestApp) {
        let mut fin = app.ws("fin", "/ws/notifications/finance/").await;
        let mut ops = app.ws("ops", "/ws/notifications/operations/").await;

        let mut writers = Vec::new();
        for writer in 0..8 {
            let client = app.client.clone();
            let url = app.url("/api/notifications/");
            let token = app.token("ops").await;
            writers.push(tokio::spawn(async move {
                for n in 0..10 {
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"content": format!("{writer}/{n}"), "receiver_group": "finance"}))
                        .send()
                        .await
                        .expect("POST");
                    assert_eq!(response.status(), StatusCode::CREATED);
                }
            }));
        }

        let on_fin = events(&mut fin, 80).await;
        let on_ops = events(&mut ops, 80).await;
        for writer in writers {
            writer.await.expect("writer");
        }

        assert_contiguous(&on_fin.iter().map(|e| e.1).collect::<Vec<_>>(), 1);
        assert_contiguous(&on_ops.iter().map(|e| e.1).collect::<Vec<_>>(), 1);
        let mut fin_ids: Vec<i64> = on_fin.iter().map(|e| e.2).collect();
        let mut ops_ids: Vec<i64> = on_ops.iter().map(|e| e.2).collect();
        fin_ids.sort();
        ops_ids.sort();
        fin_ids.dedup();
        assert_eq!(fin_ids.len(), 80, "every notification once");
        assert_eq!(fin_ids, ops_ids);
    }

    async fn metrics_report_sockets_and_traffic(app: TestApp) {
        let mut fin = app.ws("fin", "/ws/notifications/finance/").await;
        send(&app, "counted").await;
        fin.recv_type("notification.created").await;

        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();

        assert!(text.contains(r#"herald_sockets_open{group="finance"}"#), "{text}");
        assert!(text.contains("herald_connections_open"), "{text}");
        assert!(text.contains(r#"route="/api/notifications/""#), "{text}");
        assert!(text.contains(r#"status="201""#), "{text}");
        assert!(text.contains("herald_http_request_duration_seconds_bucket"), "{text}");
        assert!(text.contains(r#"herald_events_published_total{result="ok"}"#), "{text}");
        assert!(text.contains("herald_events_delivered_total"), "{text}");
        assert!(text.contains("herald_broadcast_duration_seconds_bucket"), "{text}");
        assert!(text.contains(r#"herald_store_write_batch_size_bucket{le="1"}"#), "{text}");
    }

    async fn oversized_frame_closes_with_1009(app: TestApp) {
        let mut socket = app.ws("ops", "/ws/notifications/operations/").await;

        socket.send_text("x".repeat(70 * 1024)).await;

        assert_eq!(socket.closed(Duration::from_secs(10)).await, Closed::Code(1009));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_limit_rejects_huge_message() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("app");
    let mut socket = app.ws("ops", "/ws/notifications/operations/").await;

    // The server stops reading at the 1 MiB transport limit and closes with 1009. The close can
    // overtake the rest of the upload, and the client then sees a reset instead of the close frame.
    let sent = socket.try_send_text("x".repeat(2 * 1024 * 1024)).await;

    if sent.is_ok() {
        let closed = socket.closed(Duration::from_secs(10)).await;
        assert!(
            matches!(closed, Closed::Code(1009) | Closed::Abrupt),
            "expected close code 1009 or a reset, got {closed:?}"
        );
    }
    let mut next = app.ws("ops", "/ws/notifications/operations/").await;
    next.assert_nothing_pending().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_closed_and_others_keep_up() {
    let options = RealtimeOptions {
        queue_frames: 16,
        queue_bytes: 128 * 1024,
        // The slow client starts reading only after every send: give its close frame that long.
        close_timeout: Duration::from_secs(60),
        ..RealtimeOptions::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, options)
        .await
        .expect("app");
    let token = app.token("fin").await;
    let mut slow =
        WsClient::connect_small_buffer(&app.ws_url("/ws/notifications/finance/"), &token).await;
    let mut fast = app.ws("fin2", "/ws/notifications/finance/").await;
    // 4,000 characters of three UTF-8 bytes each: about 12 KB per frame.
    let content = "账".repeat(4000);

    // Enough to fill the kernel's socket buffers (up to 4 MiB here) and the queue several times.
    const TOTAL: usize = 700;
    let mut seqs = Vec::with_capacity(TOTAL);
    for _ in 0..TOTAL {
        send(&app, &content).await;
        let (_, seq, _, _) = events(&mut fast, 1).await.remove(0);
        seqs.push(seq);
    }

    assert_contiguous(&seqs, 1);
    assert_eq!(
        slow.closed(Duration::from_secs(20)).await,
        Closed::Code(4008)
    );
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    let metrics = response.text().await.unwrap();
    assert!(
        metrics.contains(r#"herald_sockets_closed_total{reason="slow_consumer"}"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_closes_with_4001() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("app");
    let token = app.token_with_groups("fin", &["finance"], Duration::from_secs(2));
    let mut socket = app
        .ws_with_token(&token, "/ws/notifications/finance/")
        .await
        .expect("handshake");

    assert_eq!(
        socket.closed(Duration::from_secs(10)).await,
        Closed::Code(4001)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_pings_close_with_4002() {
    let options = RealtimeOptions {
        ping_interval: Duration::from_millis(200),
        ..RealtimeOptions::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, options)
        .await
        .expect("app");
    let mut socket = app.ws("fin", "/ws/notifications/finance/").await;

    // A client that does not read does not reply to pings either.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert_eq!(
        socket.closed(Duration::from_secs(10)).await,
        Closed::Code(4002)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_pings_keep_socket_open() {
    let options = RealtimeOptions {
        ping_interval: Duration::from_millis(200),
        ..RealtimeOptions::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, options)
        .await
        .expect("app");
    let mut socket = app.ws("fin", "/ws/notifications/finance/").await;

    // Reading replies to pings automatically.
    assert_eq!(socket.recv_within(Duration::from_millis(1500)).await, None);

    socket.assert_nothing_pending().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1001() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("app");
    let mut fin = app.ws("fin", "/ws/notifications/finance/").await;
    let mut ops = app.ws("ops", "/ws/notifications/operations/").await;

    let stopped = tokio::spawn(app.stop());

    assert_eq!(
        fin.closed(Duration::from_secs(10)).await,
        Closed::Code(1001)
    );
    assert_eq!(
        ops.closed(Duration::from_secs(10)).await,
        Closed::Code(1001)
    );
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("server stopped in time")
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_from_closing_socket_still_publishes() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("app");
    let mut fin = app.ws("fin", "/ws/notifications/finance/").await;
    let mut ops = app.ws("ops", "/ws/notifications/operations/").await;

    ops.send(json!({"type": "send_notification", "content": "fire and forget", "receiver_group": "finance"})).await;
    ops.close().await;

    let created = fin.recv_type("notification.created").await;
    assert_eq!(created["notification"]["content"], "fire and forget");
}
