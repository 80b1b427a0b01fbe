//! Confirming notifications: permissions, first-wins atomicity, retries and batches.

use herald_tests::{StatusCode, add_finance_users, backend_tests};
use serde_json::json;

backend_tests! {
    async fn receiver_confirms_and_sender_sees_it(app: TestApp) {
        let id = app.send("ops", "请确认付款", "finance").await["id"].as_i64().unwrap();

        let reply = app.post("fin", &format!("/api/notifications/{id}/confirm/"), json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["status"], "confirmed");
        assert_eq!(reply.body["confirmed_by"], "fin");
        assert!(reply.body["confirmed_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(reply.body["read"], false, "confirming does not mark the notification read");

        let seen = app.get("ops", &format!("/api/notifications/{id}/")).await;
        assert_eq!(seen.body["status"], "confirmed");
        assert_eq!(seen.body["confirmed_by"], "fin");
    }

    async fn confirm_without_body_works(app: TestApp) {
        // The original system's clients POST with no body at all.
        let id = app.send("ops", "x", "finance").await["id"].as_i64().unwrap();
        let response = app.client.post(app.url(&format!("/api/notifications/{id}/confirm/"))).bearer_auth(app.token("fin").await).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    async fn retry_by_same_user_is_safe(app: TestApp) {
        let id = app.send("ops", "x", "finance").await["id"].as_i64().unwrap();
        let first = app.post("fin", &format!("/api/notifications/{id}/confirm/"), json!({})).await;
        let again = app.post("fin", &format!("/api/notifications/{id}/confirm/"), json!({})).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.body["confirmed_at"], first.body["confirmed_at"]);

        let other = app.post("fin2", &format!("/api/notifications/{id}/confirm/"), json!({})).await;
        assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.body);
        assert_eq!(other.body["code"], "already_confirmed");
        assert_eq!(other.body["confirmed_by"], "fin");
        assert_eq!(other.body["confirmed_at"], first.body["confirmed_at"]);
    }

    async fn only_receivers_may_confirm(app: TestApp) {
        let id = app.send("ops", "x", "finance").await["id"].as_i64().unwrap();

        let sender = app.post("ops", &format!("/api/notifications/{id}/confirm/"), json!({})).await;
        assert_eq!(sender.status, StatusCode::FORBIDDEN);
        let outsider = app.post("hr", &format!("/api/notifications/{id}/confirm/"), json!({})).await;
        assert_eq!(outsider.status, StatusCode::NOT_FOUND, "an outsider must not learn the id exists");
        let auditor = app.post("auditor", &format!("/api/notifications/{id}/confirm/"), json!({})).await;
        assert_eq!(auditor.status, StatusCode::FORBIDDEN);

        for path in ["999999/confirm/", "9223372036854775808/confirm/", "abc/confirm/", "-1/confirm/"] {
            let reply = app.post("fin", &format!("/api/notifications/{path}"), json!({})).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    async fn concurrent_confirmations_have_one_winner(app: TestApp) {
        let users = add_finance_users(&app.store, 24).await.unwrap();
        let id = app.send("ops", "谁先确认", "finance").await["id"].as_i64().unwrap();

        let mut tokens = Vec::new();
        for user in &users {
            tokens.push((user.clone(), app.token(user).await));
        }
        let attempts = tokens.iter().map(|(_, token)| {
            let request = app.client.post(app.url(&format!("/api/notifications/{id}/confirm/"))).bearer_auth(token);
            async move { herald_tests::Reply::from(request.send().await.expect("POST")).await }
        });
        let replies = futures_util::future::join_all(attempts).await;

        let winners: Vec<_> = replies.iter().filter(|r| r.status == StatusCode::OK).collect();
        let losers = replies.iter().filter(|r| r.status == StatusCode::CONFLICT).count();
        assert_eq!(winners.len(), 1, "statuses: {:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
        assert_eq!(losers, users.len() - 1);

        let winner = winners[0].body["confirmed_by"].as_str().unwrap().to_owned();
        for reply in replies.iter().filter(|r| r.status == StatusCode::CONFLICT) {
            assert_eq!(reply.body["confirmed_by"], winner.as_str());
        }
        let history = app.get("ops", &format!("/api/notifications/{id}/history/")).await;
        let confirmations = history.body.as_array().unwrap().iter().filter(|e| e["action"] == "confirmed").count();
        assert_eq!(confirmations, 1);
    }

    async fn batch_confirm_reports_each_id(app: TestApp) {
        let mine = app.send("ops", "a", "finance").await["id"].as_i64().unwrap();
        let taken = app.send("ops", "b", "finance").await["id"].as_i64().unwrap();
        let outgoing = app.send("fin", "c", "operations").await["id"].as_i64().unwrap();
        let hidden = app.send("hr", "d", "finance").await["id"].as_i64().unwrap();
        app.post("fin2", &format!("/api/notifications/{taken}/confirm/"), json!({})).await;

        let reply = app.post("fin", "/api/notifications/confirm/", json!({"ids": [mine, taken, outgoing, 424242, mine]})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let results = reply.body["results"].as_array().unwrap();
        let outcome = |id: i64| results.iter().find(|r| r["id"] == id).map(|r| r["result"].as_str().unwrap().to_owned());
        assert_eq!(results.len(), 4, "duplicate ids are applied once");
        assert_eq!(outcome(mine).as_deref(), Some("confirmed"));
        assert_eq!(outcome(taken).as_deref(), Some("already_confirmed"));
        assert_eq!(outcome(outgoing).as_deref(), Some("forbidden"));
        assert_eq!(outcome(424242).as_deref(), Some("not_found"));

        // hr's notification to finance is visible to fin: confirmable in a batch too.
        let reply = app.post("fin", "/api/notifications/confirm/", json!({"ids": [hidden]})).await;
        assert_eq!(reply.body["results"][0]["result"], "confirmed");
    }

    async fn batch_confirm_validates_ids(app: TestApp) {
        let too_many: Vec<i64> = (1..=201).collect();
        for body in [json!({"ids": []}), json!({"ids": too_many}), json!({}), json!({"ids": ["a"]})] {
            let reply = app.post("fin", "/api/notifications/confirm/", body.clone()).await;
            assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(reply.body["field"].as_str().unwrap().starts_with("ids"), "{}", reply.body);
        }
    }
}
