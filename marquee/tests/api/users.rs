use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn registering_then_logging_in_gives_a_token_for_my_account() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/users",
            None,
            &json!({"email": "Ann@Example.com", "password": "secret-pass", "name": "Ann",
                    "address": "1 Elm St"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["roles"], json!(["customer"]));
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    let token = app.token("ann@example.com", "secret-pass").await;
    let me: Value = app
        .get("/v1/users/me", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["address"], "1 Elm St");
}

#[tokio::test]
async fn emails_are_compared_case_insensitively() {
    let app = spawn_app().await;
    let body = |email: &str| json!({"email": email, "password": "secret-pass", "name": "Ann"});
    let first = app.post("/v1/users", None, &body("ann@example.com")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = app.post("/v1/users", None, &body("ANN@example.com")).await;
    problem(again, 409, "email-taken").await;
}

#[tokio::test]
async fn bad_registrations_name_every_invalid_field() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/users",
            None,
            &json!({"email": "nope", "password": "short", "name": " "}),
        )
        .await;
    let body = problem(r, 422, "validation-failed").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "name", "password"]);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    app.customer().await;
    let wrong = app
        .post(
            "/v1/auth/token",
            None,
            &json!({"email": ADMIN_EMAIL, "password": "nope-nope"}),
        )
        .await;
    let a = problem(wrong, 401, "unauthenticated").await;
    let unknown = app
        .post(
            "/v1/auth/token",
            None,
            &json!({"email": "who@x.org", "password": "nope-nope"}),
        )
        .await;
    let b = problem(unknown, 401, "unauthenticated").await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn me_needs_a_valid_token() {
    let app = spawn_app().await;
    problem(app.get("/v1/users/me", None).await, 401, "unauthenticated").await;
    problem(
        app.get("/v1/users/me", Some("not.a.token")).await,
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn i_can_change_my_name_and_address() {
    let app = spawn_app().await;
    let token = app.customer().await;
    let r = app
        .client
        .patch(app.url("/v1/users/me"))
        .bearer_auth(&token)
        .json(&json!({"name": "New Name", "address": "2 Oak Ave"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let me: Value = r.json().await.unwrap();
    assert_eq!(
        (me["name"].as_str(), me["address"].as_str()),
        (Some("New Name"), Some("2 Oak Ave"))
    );
}

#[tokio::test]
async fn tokens_survive_a_restart_because_the_generated_secret_is_kept() {
    let app = spawn_app().await;
    let token = app.customer().await;
    let again = spawn_with(app.config.clone()).await;
    let r = again.get("/v1/users/me", Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK);
}
