//! Groups, health, the OpenAPI document, routing errors and database loss.

use herald_tests::{Backend, StatusCode, TestApp, backend_tests};
use serde_json::json;

backend_tests! {
    async fn groups_list_receivers_and_seq(app: TestApp) {
        let reply = app.get("both", "/api/groups/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.body,
            json!([
                {"name": "hr", "display_name": "人事组", "seq": 0, "can_send_to": [{"name": "finance", "display_name": "财务组"}], "can_receive_from": []},
                {"name": "operations", "display_name": "运营组", "seq": 0, "can_send_to": [{"name": "finance", "display_name": "财务组"}], "can_receive_from": [{"name": "finance", "display_name": "财务组"}]},
            ])
        );

        app.send("ops", "x", "finance").await;
        let id = app.send("ops", "y", "finance").await["id"].as_i64().unwrap();
        app.post("fin", &format!("/api/notifications/{id}/confirm/"), json!({})).await;
        let reply = app.get("fin", "/api/groups/").await;
        assert_eq!(reply.body[0]["name"], "finance");
        assert_eq!(reply.body[0]["seq"], 3, "two creations and one confirmation");
    }

    async fn probes_answer(app: TestApp) {
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let ready = herald_tests::Reply::from(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
        assert_eq!(ready.status, StatusCode::OK);
        assert_eq!(ready.body["database"], "ok");
    }

    async fn routing_errors_are_problems(app: TestApp) {
        let missing = app.get("fin", "/api/nothing-here/").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.header("content-type"), Some("application/problem+json"));

        let token = app.token("fin").await;
        let wrong_method = app.client.delete(app.url("/api/notifications/")).bearer_auth(token).send().await.unwrap();
        let wrong_method = herald_tests::Reply::from(wrong_method).await;
        assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong_method.body["code"], "method_not_allowed");
    }

    async fn openapi_document_covers_the_api(app: TestApp) {
        let reply = herald_tests::Reply::from(app.client.get(app.url("/api/openapi.json")).send().await.unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body["openapi"].as_str().unwrap().starts_with("3.1"), "{}", reply.body["openapi"]);

        let expected = [
            ("/api/auth/token", "post"),
            ("/api/auth/refresh", "post"),
            ("/api/groups/", "get"),
            ("/api/notifications/", "get"),
            ("/api/notifications/", "post"),
            ("/api/notifications/{id}/", "get"),
            ("/api/notifications/{id}/confirm/", "post"),
            ("/api/notifications/confirm/", "post"),
            ("/api/notifications/{id}/read/", "post"),
            ("/api/notifications/read/", "post"),
            ("/api/notifications/unread-count/", "get"),
            ("/api/notifications/{id}/history/", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
        ];
        let paths = reply.body["paths"].as_object().expect("paths");
        for (path, method) in expected {
            let operation = &paths.get(path).unwrap_or_else(|| panic!("{path} is missing"))[method];
            assert!(operation.is_object(), "{method} {path} is missing");
            assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has no responses");
        }
        assert_eq!(paths.len(), 13, "every documented path is listed above: {:?}", paths.keys().collect::<Vec<_>>());
        let notification = &reply.body["components"]["schemas"]["Notification"]["properties"];
        for field in ["id", "content", "sender", "sender_group", "receiver_group", "status", "priority", "confirmed_by", "confirmed_at", "created_at", "read"] {
            assert!(notification.get(field).is_some(), "Notification.{field} is not documented");
        }
    }
}

/// Losing the database turns requests into 503 answers and `/readyz` into 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_loss_gives_503() {
    let Some(app) = TestApp::spawn_postgres().await else {
        return;
    };
    assert_eq!(app.backend, Backend::Postgres);
    app.send("ops", "before the outage", "finance").await;
    // Tokens are minted from the store, so take one while the database is still there.
    let token = app.token("fin").await;

    let herald_tests::TestDb::Postgres {
        admin_url, name, ..
    } = &app.db
    else {
        unreachable!()
    };
    herald_tests::TestDb::drop_now(admin_url, name)
        .await
        .expect("drop the database under the gateway");

    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let response = app
        .client
        .get(app.url("/api/notifications/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let reply = herald_tests::Reply::from(response).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(reply.body["code"], "unavailable");
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_recovers_by_itself() {
    use sea_orm::ConnectionTrait;

    let Some(app) = TestApp::spawn_postgres().await else {
        return;
    };
    let token = app.token("fin").await;
    let herald_tests::TestDb::Postgres {
        admin_url, name, ..
    } = &app.db
    else {
        unreachable!()
    };
    let admin = sea_orm::Database::connect(admin_url.as_str())
        .await
        .expect("admin connection");
    let list = || {
        app.client
            .get(app.url("/api/notifications/"))
            .bearer_auth(&token)
            .send()
    };

    // Refuse new connections and end the gateway's open ones, as a database restart would.
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
        ))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    let during = herald_tests::Reply::from(list().await.unwrap()).await;
    assert_eq!(
        during.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        during.body
    );
    assert_eq!(during.body["code"], "unavailable");

    admin
        .execute_unprepared(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if list().await.unwrap().status() == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "the gateway answers again within 10 s of the database returning"
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}
