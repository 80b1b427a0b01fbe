//! Per-user read state, unread counts and the audit trail.

use herald_tests::{StatusCode, TestApp, backend_tests};
use serde_json::json;

async fn unread(app: &TestApp, user: &str) -> u64 {
    let reply = app.get(user, "/api/notifications/unread-count/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["count"].as_u64().unwrap()
}

backend_tests! {
    async fn read_marks_are_per_user(app: TestApp) {
        let a = app.send("ops", "a", "finance").await["id"].as_i64().unwrap();
        let b = app.send("ops", "b", "finance").await["id"].as_i64().unwrap();
        assert_eq!(unread(&app, "fin").await, 2);
        assert_eq!(unread(&app, "ops").await, 0, "a sender's own notifications are never unread");

        let reply = app.post("fin", &format!("/api/notifications/{a}/read/"), json!({})).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(reply.text, "");
        assert_eq!(unread(&app, "fin").await, 1);
        assert_eq!(unread(&app, "fin2").await, 2);

        let fetched = app.get("fin", &format!("/api/notifications/{a}/")).await;
        assert_eq!(fetched.body["read"], true);
        let unmarked = app.get("fin2", &format!("/api/notifications/{a}/")).await;
        assert_eq!(unmarked.body["read"], false);
        let own = app.get("ops", &format!("/api/notifications/{a}/")).await;
        assert_eq!(own.body["read"], true, "a sender has read what it sent");
        let confirmed = app.post("fin", &format!("/api/notifications/{a}/confirm/"), json!({})).await;
        assert_eq!(confirmed.body["read"], true, "the confirmation reply keeps the read mark");
        let unread_list = app.get("fin", "/api/notifications/?unread=true").await;
        let ids: Vec<i64> = unread_list.body.as_array().unwrap().iter().map(|n| n["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, vec![b]);

        let listed = app.get("fin2", "/api/notifications/").await;
        assert!(listed.body.as_array().unwrap().iter().all(|n| n["read"] == false));
    }

    async fn mark_many_and_all(app: TestApp) {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(app.send("ops", &format!("n{i}"), "finance").await["id"].as_i64().unwrap());
        }

        let reply = app.post("fin", "/api/notifications/read/", json!({"ids": [ids[0], ids[1], 999999]})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["updated"], 2);
        let again = app.post("fin", "/api/notifications/read/", json!({"ids": [ids[0]]})).await;
        assert_eq!(again.body["updated"], 0, "reading twice changes nothing");

        let all = app.post("fin", "/api/notifications/read/", json!({"all": true})).await;
        assert_eq!(all.body["updated"], 3);
        assert_eq!(unread(&app, "fin").await, 0);

        // hr cannot mark what it cannot see.
        let hidden = app.post("hr", "/api/notifications/read/", json!({"ids": [ids[4]]})).await;
        assert_eq!(hidden.body["updated"], 0);
        let hidden_one = app.post("hr", &format!("/api/notifications/{}/read/", ids[4]), json!({})).await;
        assert_eq!(hidden_one.status, StatusCode::NOT_FOUND);
    }

    async fn mark_read_validates_body(app: TestApp) {
        for body in [json!({}), json!({"all": false}), json!({"ids": [1], "all": true}), json!({"ids": []})] {
            let reply = app.post("fin", "/api/notifications/read/", body.clone()).await;
            assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", reply.body);
        }
    }

    async fn history_lists_created_read_confirmed(app: TestApp) {
        let id = app.send("ops", "审计", "finance").await["id"].as_i64().unwrap();
        app.post("fin2", &format!("/api/notifications/{id}/read/"), json!({})).await;
        app.post("fin", &format!("/api/notifications/{id}/confirm/"), json!({})).await;

        let reply = app.get("ops", &format!("/api/notifications/{id}/history/")).await;
        assert_eq!(reply.status, StatusCode::OK);
        let entries: Vec<(String, String)> = reply
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["action"].as_str().unwrap().to_owned(), e["user"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            entries,
            vec![("created".into(), "ops".into()), ("read".into(), "fin2".into()), ("confirmed".into(), "fin".into())]
        );
        let times: Vec<&str> = reply.body.as_array().unwrap().iter().map(|e| e["at"].as_str().unwrap()).collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted, "entries are in time order");
    }
}
