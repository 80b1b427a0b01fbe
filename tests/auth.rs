//! Password login and token checks on every /api/ route.

use herald_tests::{StatusCode, TEST_PASSWORD, TEST_SECRET, TestApp, backend_tests};
use serde_json::json;

async fn login(app: &TestApp, username: &str, password: &str) -> herald_tests::Reply {
    let response = app
        .client
        .post(app.url("/api/auth/token"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("POST /api/auth/token");
    herald_tests::Reply::from(response).await
}

async fn groups_with(app: &TestApp, authorization: Option<&str>) -> herald_tests::Reply {
    let mut request = app.client.get(app.url("/api/groups/"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    herald_tests::Reply::from(request.send().await.expect("GET")).await
}

/// Signs claims with HS256 and `secret`.
fn sign(claims: serde_json::Value, secret: &[u8]) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret).expect("HMAC key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .expect("sign")
}

/// An unsigned token (`alg: none`), which must never be accepted.
fn unsigned(claims: serde_json::Value) -> String {
    use base64::Engine;
    let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    format!(
        "{}.{}.",
        encode(r#"{"alg":"none","typ":"JWT"}"#),
        encode(&claims.to_string())
    )
}

backend_tests! {
    async fn login_returns_bearer_token(app: TestApp) {
        let reply = login(&app, "fin", TEST_PASSWORD).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["token_type"], "Bearer");
        assert_eq!(reply.body["expires_in"], 3600);

        let token = reply.body["access_token"].as_str().expect("access_token");
        let groups = groups_with(&app, Some(&format!("Bearer {token}"))).await;
        assert_eq!(groups.status, StatusCode::OK);
        assert_eq!(groups.body[0]["name"], "finance");
    }

    async fn wrong_password_and_unknown_user_look_alike(app: TestApp) {
        let wrong = login(&app, "fin", "not the password").await;
        let unknown = login(&app, "nobody", "not the password").await;
        let invalid_name = login(&app, "不是用户", "x").await;
        for reply in [&wrong, &unknown, &invalid_name] {
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
            assert_eq!(reply.body["code"], "unauthorized");
        }
        assert_eq!(wrong.body, unknown.body);
    }

    async fn login_requires_both_fields(app: TestApp) {
        let reply = app.client.post(app.url("/api/auth/token")).json(&json!({"username": "fin"})).send().await.unwrap();
        let reply = herald_tests::Reply::from(reply).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.body["field"], "password");
    }

    async fn api_requires_a_valid_token(app: TestApp) {
        let now = chrono::Utc::now().timestamp();
        let claims = |exp: i64| json!({"sub": "fin", "groups": ["finance"], "iat": now, "exp": exp});
        let cases = [
            ("missing", None),
            ("not bearer", Some("Basic Zm9vOmJhcg==".to_owned())),
            ("malformed", Some("Bearer not-a-jwt".to_owned())),
            ("wrong secret", Some(format!("Bearer {}", sign(claims(now + 600), b"another-secret-of-at-least-32-bytes!!")))),
            ("expired", Some(format!("Bearer {}", sign(claims(now - 600), TEST_SECRET)))),
            ("alg none", Some(format!("Bearer {}", unsigned(claims(now + 600))))),
        ];
        for (case, header) in cases {
            let reply = groups_with(&app, header.as_deref()).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}: {}", reply.body);
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{case}");
            assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{case}");
        }

        let valid = sign(claims(now + 600), TEST_SECRET);
        let reply = groups_with(&app, Some(&format!("Bearer {valid}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "a token signed with the right secret must pass");
    }

    async fn membership_comes_from_the_token(app: TestApp) {
        let now = chrono::Utc::now().timestamp();
        // A token that claims finance for the user ops: the gateway trusts the signed claims.
        let token = sign(json!({"sub": "ops", "groups": ["finance"], "iat": now, "exp": now + 600}), TEST_SECRET);
        let reply = groups_with(&app, Some(&format!("Bearer {token}"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        let names: Vec<&str> = reply.body.as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["finance"]);
    }
    async fn refresh_reissues_with_current_groups(app: TestApp) {
        let now = chrono::Utc::now().timestamp();
        // An old token that still claims finance for ops; the directory says operations.
        let stale = sign(json!({"sub": "ops", "groups": ["finance"], "iat": now, "exp": now + 60}), TEST_SECRET);

        let response = app.client.post(app.url("/api/auth/refresh")).bearer_auth(&stale).send().await.unwrap();
        let reply = herald_tests::Reply::from(response).await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["token_type"], "Bearer");
        assert_eq!(reply.body["expires_in"], 3600);
        let fresh = reply.body["access_token"].as_str().unwrap();
        let groups = groups_with(&app, Some(&format!("Bearer {fresh}"))).await;
        let names: Vec<&str> = groups.body.as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["operations"]);
    }

    async fn refresh_needs_a_valid_token_of_an_existing_user(app: TestApp) {
        let missing = app.client.post(app.url("/api/auth/refresh")).send().await.unwrap();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);

        let now = chrono::Utc::now().timestamp();
        let ghost = sign(json!({"sub": "ghost", "groups": ["finance"], "iat": now, "exp": now + 60}), TEST_SECRET);
        let response = app.client.post(app.url("/api/auth/refresh")).bearer_auth(&ghost).send().await.unwrap();
        let reply = herald_tests::Reply::from(response).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.body["code"], "unauthorized");
    }
}
