//! Listing: visibility between groups, filters, time offsets and keyset pagination.

use std::collections::BTreeSet;

use herald_tests::{StatusCode, backend_tests};
use serde_json::{Value, json};

fn ids(body: &Value) -> Vec<i64> {
    body.as_array()
        .expect("a JSON array")
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect()
}

/// Extracts the path and query of a `Link: <...>; rel="next"` header.
fn next_link(reply: &herald_tests::Reply) -> Option<String> {
    let link = reply.header("link")?;
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    Some(link[1..link.find('>').unwrap()].to_owned())
}

backend_tests! {
    async fn groups_see_only_their_notifications(app: TestApp) {
        let to_finance = app.send("ops", "ops→finance", "finance").await["id"].as_i64().unwrap();
        let hr_to_finance = app.send("hr", "hr→finance", "finance").await["id"].as_i64().unwrap();
        let to_ops = app.send("fin", "finance→ops", "operations").await["id"].as_i64().unwrap();

        assert_eq!(ids(&app.get("ops", "/api/notifications/").await.body), vec![to_ops, to_finance]);
        assert_eq!(ids(&app.get("hr", "/api/notifications/").await.body), vec![hr_to_finance]);
        assert_eq!(ids(&app.get("fin", "/api/notifications/").await.body), vec![to_ops, hr_to_finance, to_finance]);
        assert_eq!(ids(&app.get("auditor", "/api/notifications/").await.body), vec![to_ops, hr_to_finance, to_finance]);

        let hidden = app.get("hr", &format!("/api/notifications/{to_finance}/")).await;
        assert_eq!(hidden.status, StatusCode::NOT_FOUND);
        let history = app.get("hr", &format!("/api/notifications/{to_finance}/history/")).await;
        assert_eq!(history.status, StatusCode::NOT_FOUND);
    }

    async fn filters_combine(app: TestApp) {
        let a = app.send("ops", "a", "finance").await["id"].as_i64().unwrap();
        let b = app.post("ops", "/api/notifications/", json!({"content": "b", "receiver_group": "finance", "priority": "urgent"})).await.body["id"].as_i64().unwrap();
        let c = app.send("hr", "c", "finance").await["id"].as_i64().unwrap();
        let d = app.send("fin", "d", "operations").await["id"].as_i64().unwrap();
        app.post("fin", &format!("/api/notifications/{a}/confirm/"), json!({})).await;

        let cases = [
            ("status=pending", vec![d, c, b]),
            ("status=confirmed", vec![a]),
            ("sender_group=operations", vec![b, a]),
            ("receiver_group=operations", vec![d]),
            ("priority=urgent", vec![b]),
            ("sender_group=operations&status=pending", vec![b]),
            ("sender_group=hr&receiver_group=finance", vec![c]),
        ];
        for (query, expected) in cases {
            let reply = app.get("fin", &format!("/api/notifications/?{query}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{query}");
            assert_eq!(ids(&reply.body), expected, "{query}");
        }
    }

    async fn bad_filters_are_named(app: TestApp) {
        for (query, field) in [
            ("status=done", "status"),
            ("priority=max", "priority"),
            ("sender_group=Bad%20Name", "sender_group"),
            ("created_after=yesterday", "created_after"),
            ("created_before=2024-13-01T00:00:00Z", "created_before"),
            ("limit=0", "limit"),
            ("limit=201", "limit"),
            ("limit=ten", "limit"),
            ("unread=maybe", "unread"),
            ("cursor=%21%21", "cursor"),
        ] {
            let reply = app.get("fin", &format!("/api/notifications/?{query}")).await;
            assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {}", reply.body);
            assert_eq!(reply.body["field"], field, "{query}");
        }
    }

    async fn time_filters_accept_offsets(app: TestApp) {
        let first = app.send("ops", "early", "finance").await;
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let second = app.send("ops", "late", "finance").await;

        let created: chrono::DateTime<chrono::FixedOffset> = second["created_at"].as_str().unwrap().parse().unwrap();
        let shanghai = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
        let just_before = (created - chrono::Duration::milliseconds(1)).with_timezone(&shanghai);
        let stamp = just_before.to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
        assert!(stamp.ends_with("+08:00"), "{stamp}");

        // Encoded '+' and a raw '+' (which a query string turns into a space) both work.
        for query in [format!("created_after={}", stamp.replace('+', "%2B")), format!("created_after={stamp}")] {
            let reply = app.get("fin", &format!("/api/notifications/?{query}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
            assert_eq!(ids(&reply.body), vec![second["id"].as_i64().unwrap()], "{query}");
        }
        let before = app.get("fin", &format!("/api/notifications/?created_before={}", stamp.replace('+', "%2B"))).await;
        assert_eq!(ids(&before.body), vec![first["id"].as_i64().unwrap()]);
    }

    async fn pages_neither_skip_nor_repeat(app: TestApp) {
        let mut created = Vec::new();
        for i in 0..25 {
            created.push(app.send("ops", &format!("n{i}"), "finance").await["id"].as_i64().unwrap());
        }

        let mut seen = Vec::new();
        let mut next = Some("/api/notifications/?limit=7&sender_group=operations".to_owned());
        let mut pages = 0;
        while let Some(path) = next {
            let reply = app.get("fin", &path).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
            seen.extend(ids(&reply.body));
            next = next_link(&reply);
            if let Some(link) = &next {
                assert!(link.contains("sender_group=operations"), "filters carry over: {link}");
            }
            // Newer notifications arriving between pages must not shift the pages.
            app.send("ops", "arrived while paging", "finance").await;
            pages += 1;
            assert!(pages < 10, "pagination does not end");
        }

        assert_eq!(pages, 4);
        created.reverse();
        assert_eq!(seen, created, "every original notification once, newest first");
        assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), seen.len());
    }

    async fn default_limit_is_fifty(app: TestApp) {
        for i in 0..51 {
            app.send("ops", &format!("n{i}"), "finance").await;
        }
        let reply = app.get("fin", "/api/notifications/").await;
        assert_eq!(reply.body.as_array().unwrap().len(), 50);
        assert!(next_link(&reply).is_some());
        let last = app.get("fin", &next_link(&reply).unwrap()).await;
        assert_eq!(last.body.as_array().unwrap().len(), 1);
        assert!(next_link(&last).is_none());
    }
}
