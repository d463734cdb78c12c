//! What the engine defends, one test per defence (docs/threat-model.md names them): rate
//! limits, token checks, ownership, roles, security headers, hostile input, and secrets kept
//! out of logs, events and tables.

use crate::helpers::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use marquee_api::ratelimit::{Rate, RateLimits};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const SECRET: &str = "a-test-secret-that-is-long-enough-1234";

/// The key that signs tokens: derived from [`SECRET`] for that purpose alone.
fn signing_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, SECRET.as_bytes())
        .expand(b"marquee token signing v1", &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    key
}

/// A rate of `count` per hour: nothing refills while a test runs.
fn hourly(count: u32) -> Rate {
    Rate {
        count,
        per: Duration::from_secs(3600),
    }
}

/// Limits so generous they never bite, for the scopes a test is not about.
fn generous() -> RateLimits {
    let mut limits = RateLimits::default();
    for rule in [&mut limits.login, &mut limits.register, &mut limits.booking] {
        rule.address = hourly(1000);
        rule.account = hourly(1000);
    }
    limits
}

async fn spawn_limited(limits: RateLimits, proxy_hops: usize) -> TestApp {
    let mut config = test_config(&fresh_database_url());
    config.rate_limits = Some(limits);
    config.proxy_hops = proxy_hops;
    config.jwt_secret = Some(SECRET.into());
    spawn_with(config).await
}

/// Asserts a 429 `rate-limited` problem whose `Retry-After` is whole seconds within `most`.
async fn rate_limited(r: Response, most: u64) {
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=most).contains(&retry), "Retry-After {retry}");
    problem(r, 429, "rate-limited").await;
}

async fn register(app: &TestApp, email: &str) -> Response {
    app.post(
        "/v1/users",
        None,
        &json!({"email": email, "password": "password123", "name": "Ann"}),
    )
    .await
}

async fn login(app: &TestApp, email: &str, password: &str) -> Response {
    app.post(
        "/v1/auth/token",
        None,
        &json!({"email": email, "password": password}),
    )
    .await
}

async fn accounts(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from accounts")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn logins_past_the_per_account_limit_are_429_even_with_the_right_password() {
    let mut limits = generous();
    limits.login.account = hourly(2);
    let app = spawn_limited(limits, 0).await;
    assert_eq!(
        register(&app, "ann@example.com").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        register(&app, "bob@example.com").await.status(),
        StatusCode::CREATED
    );
    for _ in 0..2 {
        let r = login(&app, "ann@example.com", "wrong-password").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // The right password no longer helps, whatever the case of the email: no token is issued.
    let r = login(&app, "ANN@example.com", "password123").await;
    rate_limited(r, 1800).await;
    // Another account from the same address is not affected.
    let r = login(&app, "bob@example.com", "password123").await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn registrations_past_the_per_address_limit_are_429_and_create_nothing() {
    let mut limits = generous();
    limits.register.address = hourly(2);
    let app = spawn_limited(limits, 0).await;
    for email in ["a@example.com", "b@example.com"] {
        assert_eq!(register(&app, email).await.status(), StatusCode::CREATED);
    }
    let before = accounts(&app).await;
    rate_limited(register(&app, "c@example.com").await, 1800).await;
    assert_eq!(
        accounts(&app).await,
        before,
        "the refused registration created nothing"
    );
    let r = login(&app, "c@example.com", "password123").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn holds_and_payments_past_the_per_user_limit_are_429_and_change_nothing() {
    let mut limits = generous();
    limits.booking.account = hourly(3);
    let app = spawn_limited(limits, 0).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    let hold = app.held(&ann, &showtime, &["A1"]).await;
    let paid = app
        .pay(&ann, hold["id"].as_str().unwrap(), "4242424242424242")
        .await;
    assert_eq!(paid.status(), StatusCode::CREATED);
    let second = app.held(&ann, &showtime, &["A2"]).await;
    let before = app.event_count().await;
    rate_limited(app.hold(&ann, &showtime, &["A3"]).await, 1200).await;
    let r = app
        .pay(&ann, second["id"].as_str().unwrap(), "4242424242424242")
        .await;
    rate_limited(r, 1200).await;
    assert_eq!(
        app.event_count().await,
        before,
        "refused requests record nothing"
    );
    let map = app.seat_statuses(&showtime, None).await;
    assert_eq!(seat_status(&map, "A3").0, "available");
    // Bob, from the same address, books as usual.
    app.held(&bob, &showtime, &["A3"]).await;
}

#[tokio::test]
async fn a_forged_x_forwarded_for_does_not_escape_the_address_limit() {
    let mut limits = generous();
    limits.login.address = hourly(2);
    let app = spawn_limited(limits, 0).await;
    let attempt = |ip: &'static str| {
        app.client
            .post(app.url("/v1/auth/token"))
            .header("x-forwarded-for", ip)
            .json(&json!({"email": "nobody@example.com", "password": "guess-guess"}))
            .send()
    };
    for ip in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(
            attempt(ip).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    rate_limited(attempt("198.51.100.3").await.unwrap(), 1800).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowance() {
    let mut limits = generous();
    limits.login.address = hourly(2);
    let app = spawn_limited(limits, 1).await;
    let attempt = |forwarded: &'static str| {
        app.client
            .post(app.url("/v1/auth/token"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"email": "nobody@example.com", "password": "guess-guess"}))
            .send()
    };
    // The proxy appends the address it saw; what the client put before it is ignored.
    for forwarded in ["198.51.100.1", "10.9.9.9, 198.51.100.1"] {
        let r = attempt(forwarded).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    rate_limited(attempt("10.1.1.1, 198.51.100.1").await.unwrap(), 1800).await;
    let r = attempt("198.51.100.2").await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "another client is not limited"
    );
}

/// A JWT signed with `secret` under HMAC-SHA256 but whose header claims `alg`: what an
/// attacker sends hoping the server picks the algorithm from the token.
fn hs256_signed_with_header(alg: &str, claims: &Value, secret: &[u8]) -> String {
    use base64_url as b64;
    let header = b64::encode(&json!({"alg": alg, "typ": "JWT"}).to_string());
    let payload = b64::encode(&claims.to_string());
    let input = format!("{header}.{payload}");
    format!(
        "{input}.{}",
        b64::encode_bytes(&hmac_sha256(secret, input.as_bytes()))
    )
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// Unpadded base64url, enough for hand-made tokens.
mod base64_url {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(text: &str) -> String {
        encode_bytes(text.as_bytes())
    }

    pub fn encode_bytes(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

#[tokio::test]
async fn forged_expired_wrong_algorithm_and_malformed_tokens_are_401() {
    let app = spawn_limited(generous(), 0).await;
    let ann = app.customer().await;
    let me: Value = app
        .get("/v1/users/me", Some(&ann))
        .await
        .json()
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64| {
        json!({"sub": me["id"], "roles": ["customer", "admin"], "iat": now - 10,
               "exp": exp, "iss": "marquee"})
    };
    let sign = |alg: Algorithm, claims: &Value, secret: &[u8]| {
        encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
    };
    let key = signing_key();
    let valid = sign(Algorithm::HS256, &claims(now + 600), &key);
    assert_eq!(
        app.get("/v1/users/me", Some(&valid)).await.status(),
        StatusCode::OK,
        "the hand-made token is right when nothing is wrong with it"
    );
    let mut tampered = valid.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let bad = [
        (
            "another key",
            sign(
                Algorithm::HS256,
                &claims(now + 600),
                b"not-the-secret-not-the-secret-xx",
            ),
        ),
        ("expired", sign(Algorithm::HS256, &claims(now - 5), &key)),
        ("HS512", sign(Algorithm::HS512, &claims(now + 600), &key)),
        ("HS384", sign(Algorithm::HS384, &claims(now + 600), &key)),
        (
            "RS256 header",
            hs256_signed_with_header("RS256", &claims(now + 600), &key),
        ),
        ("alg none", {
            let unsigned = hs256_signed_with_header("none", &claims(now + 600), &key);
            format!("{}.", unsigned.rsplit_once('.').unwrap().0)
        }),
        (
            "wrong issuer",
            sign(
                Algorithm::HS256,
                &json!({"sub": me["id"], "roles": ["admin"],
            "iat": now, "exp": now + 600, "iss": "someone-else"}),
                &key,
            ),
        ),
        (
            "the secret itself, not the key derived for signing",
            sign(Algorithm::HS256, &claims(now + 600), SECRET.as_bytes()),
        ),
        ("tampered signature", tampered),
        ("not a JWT", "not-a-token".to_owned()),
        ("three dots", "a.b.c".to_owned()),
        ("empty", String::new()),
    ];
    for (what, token) in bad {
        let r = app
            .client
            .get(app.url("/v1/users/me"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        problem(r, 401, "unauthenticated").await;
    }
    // A forged admin token opens no admin route either, and changes nothing.
    let before = app.event_count().await;
    let forged = sign(Algorithm::HS512, &claims(now + 600), &key);
    let r = app
        .post(
            "/v1/movies",
            Some(&forged),
            &json!({"title": "X", "runtime_minutes": 90}),
        )
        .await;
    problem(r, 401, "unauthenticated").await;
    let r = app
        .client
        .get(app.url("/v1/users/me"))
        .header("authorization", format!("Basic {valid}"))
        .send()
        .await
        .unwrap();
    problem(r, 401, "unauthenticated").await;
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn another_customers_reservation_and_tickets_are_404_and_stay_untouched() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let eve = app.customer().await;
    let paid = app.held(&ann, &showtime, &["A1"]).await;
    let bought: Value = app
        .pay(&ann, paid["id"].as_str().unwrap(), "4242424242424242")
        .await
        .json()
        .await
        .unwrap();
    let ticket = bought["tickets"][0]["id"].as_str().unwrap().to_owned();
    let held = app.held(&ann, &showtime, &["B1"]).await;
    let held_id = held["id"].as_str().unwrap();
    let before = app.event_count().await;
    let reservation = format!("/v1/reservations/{held_id}");
    problem(app.get(&reservation, Some(&eve)).await, 404, "not-found").await;
    problem(app.delete(&reservation, Some(&eve)).await, 404, "not-found").await;
    problem(
        app.pay(&eve, held_id, "4242424242424242").await,
        404,
        "not-found",
    )
    .await;
    let ticket_path = format!("/v1/tickets/{ticket}");
    problem(app.get(&ticket_path, Some(&eve)).await, 404, "not-found").await;
    let eves: Value = app
        .get("/v1/users/me/tickets", Some(&eve))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(eves["tickets"], json!([]));
    assert_eq!(app.event_count().await, before, "Eve changed nothing");
    // Ann still owns both.
    assert_eq!(
        app.get(&reservation, Some(&ann)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get(&ticket_path, Some(&ann)).await.status(),
        StatusCode::OK
    );
    let map = app.seat_statuses(&showtime, Some(&ann)).await;
    assert_eq!(seat_status(&map, "B1"), ("held".into(), true));
}

#[tokio::test]
async fn customers_are_403_on_every_admin_route_and_change_nothing() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let admin = app.admin().await;
    let theater = app.theater(&admin, &["ss"]).await;
    let movie = app.movie(&admin).await;
    let ann = app.customer().await;
    let before = app.event_count().await;
    let theater_id = theater["id"].as_str().unwrap();
    let posts = [
        (
            "/v1/theaters",
            json!({"name": "X", "address": "Y", "city": "Z",
            "location": {"lat": 1.0, "lon": 1.0}, "timezone": "UTC",
            "screens": [{"name": "S", "layout": ["ss"]}]}),
        ),
        ("/v1/movies", json!({"title": "X", "runtime_minutes": 90})),
        (
            "/v1/showtimes",
            json!({"movie_id": movie, "theater_id": theater_id,
            "screen_id": theater["screens"][0]["id"],
            "starts_at": chrono::Utc::now() + chrono::TimeDelta::days(3),
            "prices": prices()}),
        ),
    ];
    for (path, body) in posts {
        problem(app.post(path, Some(&ann), &body).await, 403, "forbidden").await;
    }
    for path in [
        format!("/v1/movies/{movie}"),
        format!("/v1/theaters/{theater_id}"),
    ] {
        let r = app
            .client
            .patch(app.url(&path))
            .bearer_auth(&ann)
            .json(&json!({"name": "Mine now", "title": "Mine now"}))
            .send()
            .await
            .unwrap();
        problem(r, 403, "forbidden").await;
    }
    let delete = format!("/v1/showtimes/{showtime}");
    problem(app.delete(&delete, Some(&ann)).await, 403, "forbidden").await;
    for path in [
        "/v1/events".to_owned(),
        format!("/v1/showtimes/{showtime}/seats/A1/history"),
        format!("/v1/showtimes/{showtime}/seats?as_of=2026-01-01T00:00:00Z"),
    ] {
        problem(app.get(&path, Some(&ann)).await, 403, "forbidden").await;
        problem(app.get(&path, None).await, 401, "unauthenticated").await;
    }
    assert_eq!(app.event_count().await, before);
}

fn assert_security_headers(r: &Response, csp: &str) {
    let h = r.headers();
    assert_eq!(h["x-content-type-options"], "nosniff", "{}", r.url());
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["content-security-policy"], csp);
    assert!(h.contains_key("strict-transport-security"));
    assert!(h.contains_key("x-request-id"));
}

#[tokio::test]
async fn every_answer_carries_security_headers_and_private_ones_are_not_cached() {
    let mut limits = generous();
    limits.login.account = hourly(1);
    let app = spawn_limited(limits, 0).await;
    let api = marquee_api::routes::API_CSP;
    let ann = app.customer().await;
    let ok = app.get("/v1/movies", None).await;
    assert_security_headers(&ok, api);
    assert!(
        !ok.headers().contains_key("cache-control"),
        "public reads stay cacheable"
    );
    let me = app.get("/v1/users/me", Some(&ann)).await;
    assert_security_headers(&me, api);
    assert_eq!(me.headers()["cache-control"], "no-store");
    let not_found = app.get("/v1/nothing", None).await;
    assert_security_headers(&not_found, api);
    let unauthenticated = app.get("/v1/users/me", Some("junk")).await;
    assert_security_headers(&unauthenticated, api);
    assert_eq!(unauthenticated.headers()["cache-control"], "no-store");
    let too_large = login(&app, &"x".repeat(100_000), "password").await;
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_security_headers(&too_large, api);
    // A login answer holds a token: never cached.
    let limited = login(&app, "nobody@example.com", "password").await;
    assert_eq!(limited.headers()["cache-control"], "no-store");
    let limited = login(&app, "nobody@example.com", "password").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_security_headers(&limited, api);
    for path in ["/docs/", "/docs/swagger-ui.css", "/openapi.json"] {
        let r = app.get(path, None).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_security_headers(&r, marquee_api::routes::DOCS_CSP);
    }
    let metrics = app.get("/metrics", None).await;
    assert_security_headers(&metrics, api);
}

#[tokio::test]
async fn oversized_deep_and_odd_bodies_are_4xx_problems_that_change_nothing() {
    // With rate limits on, the limiter reads login and registration bodies itself.
    let app = spawn_limited(generous(), 0).await;
    let ann = app.customer().await;
    let showtime = app.showtime().await;
    let admin = app.admin().await;
    let before = (app.event_count().await, accounts(&app).await);
    let raw = |path: &'static str, body: String| {
        // Catalog commands check the role before the body: send them as the admin.
        let token = if path == "/v1/movies" { &admin } else { &ann };
        app.client
            .post(app.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for path in [
        "/v1/users",
        "/v1/auth/token",
        "/v1/reservations",
        "/v1/movies",
    ] {
        let huge = format!(r#"{{"email": "{}"}}"#, "a".repeat(70 * 1024));
        problem(raw(path, huge).await.unwrap(), 413, "payload-too-large").await;
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        problem(raw(path, deep).await.unwrap(), 400, "malformed-request").await;
        // Nested in a field no request has, it is skipped without recursing: 400 for the
        // missing fields, or 422 where every field is optional.
        let deep_object = format!("{}1{}", r#"{"a":"#.repeat(500), "}".repeat(500));
        let r = raw(path, deep_object).await.unwrap();
        assert!(
            r.status() == 400 || r.status() == 422,
            "{path}: {}",
            r.status()
        );
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let lone_surrogate = r#"{"email": "\ud800@example.com", "title": "\ud800"}"#;
        let r = raw(path, lone_surrogate.to_owned()).await.unwrap();
        problem(r, 400, "malformed-request").await;
    }
    // A JSON array of many seats, well under the size limit.
    let seats: Vec<String> = (0..5000).map(|i| format!("A{i}")).collect();
    let r = app
        .post(
            "/v1/reservations",
            Some(&ann),
            &json!({"showtime_id": showtime, "seats": seats}),
        )
        .await;
    problem(r, 422, "validation-failed").await;
    assert_eq!((app.event_count().await, accounts(&app).await), before);
}

#[tokio::test]
async fn overlong_and_odd_unicode_fields_are_refused_and_create_nothing() {
    let app = spawn_app().await;
    let before = accounts(&app).await;
    let long_email = format!("{}@example.com", "a".repeat(300));
    let cases = [
        json!({"email": long_email, "password": "password123", "name": "Ann"}),
        json!({"email": "ann@example.com", "password": "password123", "name": "A".repeat(201)}),
        json!({"email": "ann@example.com", "password": "p".repeat(1025), "name": "Ann"}),
        json!({"email": "ann@example.com", "password": "password123", "name": "Ann",
               "address": "x".repeat(501)}),
        json!({"email": "ann\u{0}@example.com", "password": "password123", "name": "Ann"}),
        json!({"email": "ann@example.com", "password": "password123", "name": "A\u{0}nn"}),
        json!({"email": "ann@example.com", "password": "password123",
               "name": "Ann\u{202E}nimda"}),
        json!({"email": "ann@exa\u{200B}mple.com", "password": "password123", "name": "Ann"}),
        json!({"email": "ann@example.com", "password": "short", "name": "Ann"}),
    ];
    for body in cases {
        let r = app.post("/v1/users", None, &body).await;
        problem(r, 422, "validation-failed").await;
    }
    assert_eq!(accounts(&app).await, before);
    // Logging in with such an email is just a failed login, never a server error.
    for email in ["ann\u{0}@example.com".to_owned(), "é".repeat(5000)] {
        let r = login(&app, &email, "password123").await;
        problem(r, 401, "unauthenticated").await;
    }
    // Names in any script are welcome.
    let r = app
        .post(
            "/v1/users",
            None,
            &json!({"email": "zoë@example.com", "password": "pässwörd-ñ", "name": "Zoë 千尋 🎬"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    app.token("Zoë@Example.com", "pässwörd-ñ").await;
}

#[tokio::test]
async fn absurd_money_times_and_catalog_values_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let theater = app.theater(&admin, &["ss"]).await;
    let movie = app.movie(&admin).await;
    let before = app.event_count().await;
    let schedule = |price: Value, at: Value| {
        json!({"movie_id": movie, "theater_id": theater["id"],
               "screen_id": theater["screens"][0]["id"], "starts_at": at,
               "prices": {"standard": price}})
    };
    let tomorrow = json!(chrono::Utc::now() + chrono::TimeDelta::days(1));
    let usd = |amount: Value| json!({"amount": amount, "currency": "USD"});
    let cases = [
        (usd(json!(i64::MIN)), tomorrow.clone(), 422),
        (usd(json!(i64::MAX)), tomorrow.clone(), 422),
        (usd(json!(u64::MAX)), tomorrow.clone(), 400),
        (usd(json!("100")), tomorrow.clone(), 400),
        (usd(json!(-0.0)), tomorrow.clone(), 400),
        (
            json!({"amount": 100, "currency": "ÜSD"}),
            tomorrow.clone(),
            422,
        ),
        (
            usd(json!(100)),
            json!(chrono::Utc::now() - chrono::TimeDelta::minutes(5)),
            422,
        ),
        (usd(json!(100)), json!("0000-01-01T00:00:00Z"), 422),
        (usd(json!(100)), json!("+275760-09-13T00:00:00Z"), 400),
        (usd(json!(100)), json!("2030-02-30T20:00:00Z"), 400),
        (usd(json!(100)), json!(1_900_000_000), 400),
    ];
    for (price, at, status) in cases {
        let r = app
            .post(
                "/v1/showtimes",
                Some(&admin),
                &schedule(price.clone(), at.clone()),
            )
            .await;
        assert!(
            r.status().is_client_error(),
            "{price} at {at}: {}",
            r.status()
        );
        let slug = if status == 400 {
            "malformed-request"
        } else {
            "validation-failed"
        };
        problem(r, status, slug).await;
    }
    let movies = [
        json!({"title": "X", "runtime_minutes": i64::MAX}),
        json!({"title": "X", "runtime_minutes": 0}),
        json!({"title": "X", "runtime_minutes": 90, "release_date": "-0001-01-01"}),
        json!({"title": "X", "runtime_minutes": 90, "release_date": "9999-12-31"}),
        json!({"title": "X", "runtime_minutes": 90, "genres": vec!["drama"; 21]}),
        json!({"title": "X", "runtime_minutes": 90, "poster_url": "javascript:alert(1)"}),
    ];
    for body in movies {
        let r = app.post("/v1/movies", Some(&admin), &body).await;
        assert!(r.status().is_client_error(), "{body}: {}", r.status());
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let far = json!({"lat": 91.0, "lon": 0.0});
    let r = app
        .post(
            "/v1/theaters",
            Some(&admin),
            &json!({"name": "X", "address": "Y", "city": "Z", "location": far,
                    "timezone": "Mars/Olympus_Mons", "screens": [{"name": "S", "layout": ["s".repeat(5000)]}]}),
        )
        .await;
    problem(r, 422, "validation-failed").await;
    assert_eq!(app.event_count().await, before);
}

/// Everything a subscriber writes, for reading back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every row of every table of the app's database, as text.
async fn every_row(app: &TestApp) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables where table_schema = 'public'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut all = String::new();
    for table in tables {
        let rows: Option<String> = sqlx::query_scalar(&format!(
            "select string_agg(t::text, E'\\n') from \"{table}\" t"
        ))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        all.push_str(&rows.unwrap_or_default());
    }
    all
}

/// Whether [`capture_logs`] keeps what it is given.
static CAPTURING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs, once per test process, a global subscriber that keeps every event at every
/// level while [`CAPTURING`] is set. Global, not thread-local: a thread-local default can miss
/// events whose callsites other test threads registered at the same moment. Other tests'
/// lines land in it too while capturing, which only makes the check stricter.
fn capture_logs() -> Captured {
    use std::sync::atomic::Ordering;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(tracing_subscriber::filter::filter_fn(|_| {
                CAPTURING.load(Ordering::Relaxed)
            }));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other test sets a global subscriber");
        logs
    });
    CAPTURING.store(true, Ordering::Relaxed);
    logs.clone()
}

#[tokio::test]
async fn passwords_tokens_and_card_numbers_never_reach_logs_events_or_tables() {
    let logs = capture_logs();
    let mut config = test_config(&fresh_database_url());
    config.rate_limits = Some(generous());
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let (email, password, wrong) = (
        "zelda.q@example.com",
        "S3cret-horse-battery",
        "Wr0ng-guess-9z",
    );
    let (name, address) = ("Zelda Quintessa", "77 Hidden Lane");
    let r = app
        .post(
            "/v1/users",
            None,
            &json!({"email": email, "password": password, "name": name, "address": address}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        login(&app, email, wrong).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let token = app.token(email, password).await;
    let hold = app.held(&token, &showtime, &["A1"]).await;
    let reservation = hold["id"].as_str().unwrap();
    let (declined, invalid, good) = ("4000000000000002", "4242424242424241", "4242424242424242");
    assert_eq!(
        app.pay(&token, reservation, declined)
            .await
            .status()
            .as_u16(),
        402
    );
    assert_eq!(
        app.pay(&token, reservation, invalid)
            .await
            .status()
            .as_u16(),
        422
    );
    let r = app
        .client
        .post(app.url("/v1/tickets"))
        .bearer_auth(&token)
        .header("idempotency-key", Uuid::now_v7().to_string())
        .json(&json!({"reservation_id": reservation,
                      "payment": {"card_number": good, "expiry": "12/39", "cvc": "737"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        app.get("/v1/users/me", Some(&token)).await.status(),
        StatusCode::OK
    );
    app.settle().await;

    CAPTURING.store(false, std::sync::atomic::Ordering::Relaxed);
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logged.contains("/v1/tickets") && logged.contains("account registered"),
        "the capture sees the engine's logs: {}",
        &logged[..logged.len().min(3000)]
    );
    let signature = token.rsplit_once('.').unwrap().1;
    let secrets = [password, wrong, &token, signature, declined, invalid, good];
    for secret in secrets {
        assert!(!logged.contains(secret), "{secret} is in the logs");
    }
    let events: Vec<String> = app
        .events("")
        .await
        .iter()
        .map(|e| format!("{} {}", e["payload"], e["metadata"]))
        .collect();
    assert!(events
        .iter()
        .any(|e| e.contains("SeatsSold") || e.contains("tickets")));
    for event in &events {
        for private in secrets.iter().chain(&[email, name, address]) {
            assert!(
                !event.contains(private),
                "{private} is in an event: {event}"
            );
        }
    }
    let tables = every_row(&app).await;
    for secret in secrets {
        assert!(!tables.contains(secret), "{secret} is stored in a table");
    }
}

/// The request counter's value for `method` and `route`, summed over statuses.
fn requests_counted(metrics: &str, method: &str, route: &str) -> f64 {
    let labels = [format!("method=\"{method}\""), format!("route=\"{route}\"")];
    metrics
        .lines()
        .filter(|l| l.starts_with("marquee_http_requests_total{"))
        .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_odd_methods_make_no_new_series() {
    let app = spawn_app().await;
    let text = |r: Response| async move { r.text().await.unwrap() };
    let route = "/v1/movies/{id}";
    let before = requests_counted(&text(app.get("/metrics", None).await).await, "GET", route);
    let missing: Vec<String> = (0..3)
        .map(|_| format!("/v1/movies/{}", Uuid::new_v4()))
        .collect();
    for path in &missing {
        assert_eq!(app.get(path, None).await.status(), StatusCode::NOT_FOUND);
    }
    let odd = reqwest::Method::from_bytes(b"BREW").unwrap();
    let brewed = app
        .client
        .request(odd, app.url("/v1/movies"))
        .send()
        .await
        .unwrap();
    assert_eq!(brewed.status(), StatusCode::METHOD_NOT_ALLOWED);
    let metrics = text(app.get("/metrics", None).await).await;
    // Other tests in this process count requests too: at least these three.
    assert!(
        requests_counted(&metrics, "GET", route) >= before + 3.0,
        "three requests counted under the template, not their paths: {metrics}"
    );
    assert!(missing.iter().all(|path| !metrics.contains(path.as_str())));
    assert!(
        !metrics.contains("BREW"),
        "a client's own method is no label"
    );
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("marquee_http_requests_total{method=\"OTHER\"")));
    assert!(metrics.contains(
        "marquee_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/movies/{id}\"}"
    ));
}

/// Checks every answer: 503 `overloaded` with `Retry-After: 1`, or `expected`. Returns the
/// refused ones' indexes.
async fn refused_as_overloaded(answers: Vec<Response>, expected: StatusCode) -> Vec<usize> {
    let mut refused = Vec::new();
    for (i, r) in answers.into_iter().enumerate() {
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.headers()["retry-after"], "1");
            problem(r, 503, "overloaded").await;
            refused.push(i);
        } else {
            assert_eq!(r.status(), expected);
        }
    }
    refused
}

#[tokio::test]
async fn password_hashes_past_the_bound_wait_then_are_503_with_retry_after_and_create_nothing() {
    let mut config = test_config(&fresh_database_url());
    config.hash_limits = marquee_api::passwords::HashLimits {
        at_once: 1,
        wait: Duration::from_millis(100),
    };
    let app = spawn_with(config).await;
    let burst = 24;
    // Unknown emails: the dummy hash waits in the same line as a real one.
    let logins = futures::future::join_all((0..burst).map(|i| {
        let app = &app;
        async move { login(app, &format!("nobody{i}@example.com"), "password123").await }
    }))
    .await;
    let refused = refused_as_overloaded(logins, StatusCode::UNAUTHORIZED).await;
    assert!(
        !refused.is_empty(),
        "one hash at a time cannot serve {burst} in 100 ms"
    );

    let before = accounts(&app).await;
    let email = |i: usize| format!("ann{i}@example.com");
    let registrations = futures::future::join_all((0..burst).map(|i| {
        let app = &app;
        async move { register(app, &email(i)).await }
    }))
    .await;
    let refused = refused_as_overloaded(registrations, StatusCode::CREATED).await;
    assert!(!refused.is_empty(), "registrations wait in the same line");
    assert_eq!(
        accounts(&app).await,
        before + (burst - refused.len()) as i64
    );
    for i in refused {
        let r = login(&app, &email(i), "password123").await;
        problem(r, 401, "unauthenticated").await;
    }
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("marquee_password_hashes_in_progress"));
    assert!(metrics.contains(r#"marquee_requests_shed_total{reason="password_hashes"}"#));
}
