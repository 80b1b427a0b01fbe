//! Creating notifications: validation, send policy, idempotency and content fidelity.

use herald_core::store::{Created, DirectoryStore, NewNotification, NotificationStore};
use herald_core::{Content, GroupName, Priority, Username};
use herald_tests::{Reply, StatusCode, TestApp, backend_tests};
use serde_json::json;

async fn raw_post(app: &TestApp, user: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
    let mut request = app
        .client
        .post(app.url("/api/notifications/"))
        .bearer_auth(app.token(user).await)
        .body(body);
    if let Some(value) = content_type {
        request = request.header("content-type", value);
    }
    Reply::from(request.send().await.expect("POST")).await
}

async fn post_with_key(app: &TestApp, key: &str, body: serde_json::Value) -> Reply {
    let request = app
        .client
        .post(app.url("/api/notifications/"))
        .bearer_auth(app.token("ops").await)
        .header("idempotency-key", key)
        .json(&body);
    Reply::from(request.send().await.expect("POST")).await
}

backend_tests! {
    async fn create_returns_201_with_location(app: TestApp) {
        let reply = app.post("ops", "/api/notifications/", json!({"content": "测试通知内容", "receiver_group": "finance"})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

        let body = &reply.body;
        let id = body["id"].as_i64().expect("id");
        assert_eq!(reply.header("location"), Some(format!("/api/notifications/{id}/").as_str()));
        assert_eq!(body["content"], "测试通知内容");
        assert_eq!(body["sender"], "ops");
        assert_eq!(body["sender_group"], "operations");
        assert_eq!(body["receiver_group"], "finance");
        assert_eq!(body["status"], "pending");
        assert_eq!(body["priority"], "normal");
        assert_eq!(body["confirmed_by"], serde_json::Value::Null);
        assert_eq!(body["confirmed_at"], serde_json::Value::Null);
        assert!(body["created_at"].as_str().unwrap().ends_with('Z'), "{}", body["created_at"]);
    }

    async fn content_round_trips_byte_for_byte(app: TestApp) {
        let content = "  付款提醒 🎉👨‍👩‍👧 \n第二行\t<b>不是HTML</b> \u{200b}";
        let created = app.post("ops", "/api/notifications/", json!({"content": content, "receiver_group": "finance", "priority": "urgent"})).await;
        assert_eq!(created.status, StatusCode::CREATED);
        assert_eq!(created.body["content"], content);
        assert_eq!(created.body["priority"], "urgent");

        let id = created.body["id"].as_i64().unwrap();
        let fetched = app.get("fin", &format!("/api/notifications/{id}/")).await;
        assert_eq!(fetched.body["content"].as_str().unwrap().as_bytes(), content.as_bytes());
    }

    async fn content_limits(app: TestApp) {
        let longest = "财".repeat(4000);
        let ok = app.post("ops", "/api/notifications/", json!({"content": longest, "receiver_group": "finance"})).await;
        assert_eq!(ok.status, StatusCode::CREATED);

        for (case, content) in [("empty", json!("")), ("blank", json!(" \n\t\u{3000}")), ("too long", json!("财".repeat(4001))), ("wrong type", json!(42)), ("missing", serde_json::Value::Null)] {
            let mut body = json!({"receiver_group": "finance"});
            if !content.is_null() {
                body["content"] = content;
            }
            let reply = app.post("ops", "/api/notifications/", body).await;
            assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{case}: {}", reply.body);
            assert_eq!(reply.body["code"], "invalid_field", "{case}");
            assert_eq!(reply.body["field"], "content", "{case}");
        }
    }

    async fn bad_fields_are_named(app: TestApp) {
        let cases = [
            (json!({"content": "x", "receiver_group": "nowhere"}), "unknown_group", "receiver_group"),
            (json!({"content": "x", "receiver_group": "Finance"}), "unknown_group", "receiver_group"),
            (json!({"content": "x"}), "invalid_field", "receiver_group"),
            (json!({"content": "x", "receiver_group": "finance", "priority": "critical"}), "invalid_field", "priority"),
            (json!({"content": "x", "receiver_group": "finance", "sender_group": "ghosts"}), "unknown_group", "sender_group"),
        ];
        for (body, code, field) in cases {
            let reply = app.post("ops", "/api/notifications/", body.clone()).await;
            assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", reply.body);
            assert_eq!(reply.body["code"], code, "{body}");
            assert_eq!(reply.body["field"], field, "{body}");
            assert_eq!(reply.header("content-type"), Some("application/problem+json"));
        }
    }

    async fn send_policy_is_enforced(app: TestApp) {
        // finance may send to operations only.
        let reply = app.post("fin", "/api/notifications/", json!({"content": "x", "receiver_group": "hr"})).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
        assert_eq!(reply.body["code"], "forbidden");

        // ops is not a member of hr.
        let reply = app.post("ops", "/api/notifications/", json!({"content": "x", "receiver_group": "finance", "sender_group": "hr"})).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);

        let reply = app.post("fin", "/api/notifications/", json!({"content": "报销已到账", "receiver_group": "operations"})).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        assert_eq!(reply.body["sender_group"], "finance");
    }

    async fn several_sender_groups_need_a_choice(app: TestApp) {
        let reply = app.post("both", "/api/notifications/", json!({"content": "x", "receiver_group": "finance"})).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.body);
        assert_eq!(reply.body["code"], "sender_group_required");
        assert_eq!(reply.body["field"], "sender_group");
        assert_eq!(reply.body["choices"], json!(["hr", "operations"]));

        let reply = app.post("both", "/api/notifications/", json!({"content": "x", "receiver_group": "finance", "sender_group": "hr"})).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        assert_eq!(reply.body["sender_group"], "hr");
    }

    async fn malformed_requests_get_4xx(app: TestApp) {
        let reply = raw_post(&app, "ops", Some("application/json"), br#"{"content": "x", "#.to_vec()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.body["code"], "malformed_json");

        let reply = raw_post(&app, "ops", Some("text/plain"), br#"{"content":"x","receiver_group":"finance"}"#.to_vec()).await;
        assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

        let reply = raw_post(&app, "ops", None, br#"{"content":"x","receiver_group":"finance"}"#.to_vec()).await;
        assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

        let huge = format!(r#"{{"content":"{}","receiver_group":"finance"}}"#, "x".repeat(70 * 1024));
        let reply = raw_post(&app, "ops", Some("application/json"), huge.into_bytes()).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(reply.body["code"], "payload_too_large");

        let reply = raw_post(&app, "ops", Some("application/json"), b"[1, 2]".to_vec()).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);

        let listed = app.get("ops", "/api/notifications/").await;
        assert_eq!(listed.body, json!([]), "no rejected request may create a notification");
    }

    async fn idempotency_key_returns_the_original(app: TestApp) {
        let body = json!({"content": "月底结算", "receiver_group": "finance"});
        let first = post_with_key(&app, "key-1", body.clone()).await;
        assert_eq!(first.status, StatusCode::CREATED);
        let retry = post_with_key(&app, "key-1", body.clone()).await;
        assert_eq!(retry.status, StatusCode::OK);
        assert_eq!(retry.body["id"], first.body["id"]);
        assert_eq!(retry.header("location"), first.header("location"));

        let different = post_with_key(&app, "key-1", json!({"content": "另一条", "receiver_group": "finance"})).await;
        assert_eq!(different.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(different.body["code"], "idempotency_key_reused");

        let bad = post_with_key(&app, "", body.clone()).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(bad.body["field"], "Idempotency-Key");

        let listed = app.get("ops", "/api/notifications/").await;
        assert_eq!(listed.body.as_array().unwrap().len(), 1);
    }

    async fn concurrent_retries_create_one(app: TestApp) {
        let body = json!({"content": "并发重试", "receiver_group": "finance"});
        let attempts = (0..12).map(|_| post_with_key(&app, "same-key", body.clone()));
        let replies = futures_util::future::join_all(attempts).await;

        let created = replies.iter().filter(|r| r.status == StatusCode::CREATED).count();
        let replayed = replies.iter().filter(|r| r.status == StatusCode::OK).count();
        assert_eq!(created, 1, "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
        assert_eq!(replayed, 11);
        let ids: std::collections::BTreeSet<i64> = replies.iter().map(|r| r.body["id"].as_i64().unwrap()).collect();
        assert_eq!(ids.len(), 1);
    }

    async fn concurrent_writes_get_contiguous_seqs(app: TestApp) {
        // Writes that arrive together commit together, and each one still gets its own seqs.
        let earlier: Vec<i64> = {
            let mut ids = Vec::new();
            for n in 0..20 {
                ids.push(app.send("ops", &format!("earlier {n}"), "finance").await["id"].as_i64().unwrap());
            }
            ids
        };
        let finance = GroupName::parse("finance").unwrap();
        let before = app.store.find_group(&finance).await.unwrap().unwrap().seq;

        let ops = app.token("ops").await;
        let fin = app.token("fin").await;
        let creations = (0..40).map(|n| {
            let request = app.client.post(app.url("/api/notifications/")).bearer_auth(&ops)
                .json(&json!({"content": format!("together {n}"), "receiver_group": "finance"}));
            async move { Reply::from(request.send().await.expect("POST")).await }
        });
        let confirmations = earlier.iter().map(|id| {
            let request = app.client.post(app.url(&format!("/api/notifications/{id}/confirm/"))).bearer_auth(&fin);
            async move { Reply::from(request.send().await.expect("POST")).await }
        });
        let (created, confirmed) = tokio::join!(
            futures_util::future::join_all(creations),
            futures_util::future::join_all(confirmations),
        );
        for reply in created.iter().chain(&confirmed) {
            assert!(reply.status.is_success(), "{} {}", reply.status, reply.body);
        }

        let events = app.store.events_after(&finance, before, 1000).await.unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        let expected: Vec<u64> = (before + 1..=before + 60).collect();
        assert_eq!(seqs, expected, "one event per write, numbered without gaps");

        let mut notified: Vec<i64> = events.iter().map(|e| {
            let frame: serde_json::Value = serde_json::from_slice(&e.frame).unwrap();
            assert_eq!(frame["seq"].as_u64(), Some(e.seq), "the frame carries its own seq");
            frame["notification"]["id"].as_i64().unwrap()
        }).collect();
        notified.sort_unstable();
        let mut written: Vec<i64> = created.iter().map(|r| r.body["id"].as_i64().unwrap()).chain(earlier.iter().copied()).collect();
        written.sort_unstable();
        assert_eq!(notified, written, "each write has exactly one finance event");
    }

    async fn failing_write_spares_its_neighbours(app: TestApp) {
        // A write that the database rejects may share a transaction with others, which commit.
        let group = |name: &str| GroupName::parse(name).unwrap();
        let new = |receiver: &str, n: usize| NewNotification {
            content: Content::parse(format!("neighbour {n}")).unwrap(),
            sender: Username::parse("ops").unwrap(),
            sender_group: group("operations"),
            receiver_group: group(receiver),
            priority: Priority::Normal,
            idempotency: None,
        };
        let writes = (0..30).map(|n| {
            let receiver = if n % 10 == 5 { "no-such-group" } else { "finance" };
            let store = app.store.clone();
            let new = new(receiver, n);
            tokio::spawn(async move { store.create_notification(new).await })
        });
        let results = futures_util::future::join_all(writes).await;

        for (n, result) in results.into_iter().enumerate() {
            let result = result.expect("task");
            if n % 10 == 5 {
                assert!(result.is_err(), "write {n} names a missing group");
            } else {
                assert!(matches!(result, Ok(Created::New { .. })), "write {n}: {result:?}");
            }
        }
        let events = app.store.events_after(&group("finance"), 0, 1000).await.unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=27).collect::<Vec<u64>>(), "the 27 good writes, numbered without gaps");
    }
}
