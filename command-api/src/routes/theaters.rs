//! Theaters: `POST /v1/theaters`, `GET` and `PATCH /v1/theaters/{id}`.

use super::dto::Errors;
use crate::auth::Admin;
use crate::error::{ApiError, AppJson, AppPath, AppQuery};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use marquee_domain::seating::SeatLayout;
use marquee_domain::theater::{
    Location, Screen, Theater as TheaterAggregate, TheaterChanges, TheaterCommand, TheaterDetails,
};
use marquee_domain::{ScreenId, TheaterId};
use marquee_projections::theaters::{self as read, TheaterRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, search))
        .routes(routes!(get_one, update))
}

/// A point on Earth in degrees.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
pub struct LocationDto {
    #[schema(example = 40.7128, minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(example = -74.006, minimum = -180, maximum = 180)]
    pub lon: f64,
}

/// A screen to create.
#[derive(Deserialize, ToSchema)]
pub struct NewScreen {
    #[schema(example = "Screen 1")]
    pub name: String,
    /// One string per row, front row first: `s` standard, `p` premium, `w` wheelchair space,
    /// `c` companion seat, `.` aisle or gap. Rows are lettered A, B, ...; seats numbered from 1.
    #[schema(example = json!(["ss.ssss.ss", "pp.pppp.pp", "ww.cccc.ww"]))]
    pub layout: Vec<String>,
}

/// A theater to create.
#[derive(Deserialize, ToSchema)]
pub struct NewTheater {
    #[schema(example = "Roxy Downtown")]
    pub name: String,
    #[schema(example = "12 Main St")]
    pub address: String,
    #[schema(example = "Springfield")]
    pub city: String,
    pub location: LocationDto,
    /// An IANA time zone name.
    #[schema(example = "America/New_York")]
    pub timezone: String,
    pub screens: Vec<NewScreen>,
}

/// Changes to a theater; absent fields stay as they are. Screens cannot be changed here.
#[derive(Deserialize, ToSchema)]
pub struct TheaterPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub location: Option<LocationDto>,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A screen of a theater.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ScreenDto {
    pub id: Uuid,
    pub name: String,
    pub layout: Vec<String>,
    /// Number of seats.
    pub capacity: usize,
}

/// A theater.
#[derive(Serialize, ToSchema)]
pub struct Theater {
    pub id: Uuid,
    pub name: String,
    pub address: String,
    pub city: String,
    pub location: LocationDto,
    pub timezone: String,
    pub screens: Vec<ScreenDto>,
    /// Kilometres from the searched point (searches near a point only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
}

impl From<TheaterRow> for Theater {
    fn from(r: TheaterRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            address: r.address,
            city: r.city,
            location: LocationDto {
                lat: r.lat,
                lon: r.lon,
            },
            timezone: r.timezone,
            screens: serde_json::from_value(r.screens).unwrap_or_default(),
            distance_km: r.distance_km.map(|d| (d * 1000.0).round() / 1000.0),
        }
    }
}

impl Theater {
    pub fn from_aggregate(t: &TheaterAggregate) -> Option<Self> {
        let (id, d) = (t.id?, t.details.as_ref()?);
        Some(Self {
            id: id.0,
            name: d.name.clone(),
            address: d.address.clone(),
            city: d.city.clone(),
            location: LocationDto {
                lat: d.location.lat,
                lon: d.location.lon,
            },
            timezone: d.timezone.clone(),
            screens: t
                .screens
                .iter()
                .map(|s| ScreenDto {
                    id: s.id.0,
                    name: s.name.clone(),
                    layout: s.layout.clone(),
                    capacity: SeatLayout::parse(&s.layout)
                        .map(|l| l.capacity())
                        .unwrap_or(0),
                })
                .collect(),
            distance_km: None,
        })
    }
}

fn check_location(errors: &mut Errors, field: &str, l: LocationDto) -> Location {
    Location::new(l.lat, l.lon).unwrap_or_else(|| {
        errors.add(
            field,
            "lat must be within [-90, 90] and lon within [-180, 180]",
        );
        Location { lat: 0.0, lon: 0.0 }
    })
}

fn check_timezone(errors: &mut Errors, tz: &str) -> String {
    let tz = errors.text("timezone", tz, 64);
    let ok = tz == "UTC"
        || (tz.contains('/')
            && tz
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c)));
    if !tz.is_empty() && !ok {
        errors.add(
            "timezone",
            "must be an IANA time zone such as America/New_York",
        );
    }
    tz
}

/// Refuses a time zone Postgres does not know: dates of showtimes are computed in it.
async fn check_known_timezone(state: &AppState, tz: &str) -> Result<(), ApiError> {
    if read::is_known_time_zone(&state.pool, tz).await? {
        Ok(())
    } else {
        Err(ApiError::field(
            "timezone",
            "is not a known IANA time zone such as America/New_York",
        ))
    }
}

fn parse_new(body: NewTheater) -> Result<(TheaterDetails, Vec<Screen>), ApiError> {
    let mut errors = Errors::default();
    let details = TheaterDetails {
        name: errors.text("name", &body.name, 200),
        address: errors.text("address", &body.address, 500),
        city: errors.text("city", &body.city, 200),
        location: check_location(&mut errors, "location", body.location),
        timezone: check_timezone(&mut errors, &body.timezone),
    };
    let screens = body
        .screens
        .into_iter()
        .enumerate()
        .map(|(i, s)| Screen {
            id: ScreenId(Uuid::now_v7()),
            name: errors.text(&format!("screens[{i}].name"), &s.name, 100),
            layout: s.layout,
        })
        .collect();
    errors.finish()?;
    Ok((details, screens))
}

/// Add a theater with its screens (admin).
#[utoipa::path(post, path = "/v1/theaters", tag = "catalog", security(("bearer" = [])),
    request_body = NewTheater,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe")),
    responses((status = 201, body = Theater),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"), (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation-failed, e.g. a bad layout row", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    AppJson(body): AppJson<NewTheater>,
) -> Result<(StatusCode, axum::Json<Theater>), ApiError> {
    let (details, screens) = parse_new(body)?;
    check_known_timezone(&state, &details.timezone).await?;
    let id = TheaterId(Uuid::now_v7());
    let command = TheaterCommand::Add {
        id,
        details,
        screens,
    };
    let meta = admin.metadata();
    let (theater, _) = state
        .store
        .execute::<TheaterAggregate>(&id.to_string(), command, &meta)
        .await??;
    let body = Theater::from_aggregate(&theater).expect("the theater was just added");
    Ok((StatusCode::CREATED, axum::Json(body)))
}

/// Load a theater aggregate, or 404.
pub async fn load(state: &AppState, id: Uuid) -> Result<TheaterAggregate, ApiError> {
    let (theater, _) = state
        .store
        .load::<TheaterAggregate>(&id.to_string())
        .await?;
    if theater.exists() {
        Ok(theater)
    } else {
        Err(ApiError::NotFound)
    }
}

/// A theater with its screens.
#[utoipa::path(get, path = "/v1/theaters/{id}", tag = "catalog",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Theater), (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn get_one(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<axum::Json<Theater>, ApiError> {
    if let Some(row) = read::get(&state.pool, id).await? {
        return Ok(axum::Json(row.into()));
    }
    // Not projected yet (just created): answer from the event store.
    let theater = load(&state, id).await?;
    Ok(axum::Json(
        Theater::from_aggregate(&theater).ok_or(ApiError::NotFound)?,
    ))
}

/// What to search for.
#[derive(Deserialize, IntoParams)]
pub struct TheaterSearch {
    /// Latitude of the point to search near (with `lon`).
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Kilometres around the point; default 25, at most 500.
    pub radius_km: Option<f64>,
    /// Text the name or city contains.
    pub q: Option<String>,
    /// Most theaters returned; default 20, at most 100.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// Theaters found.
#[derive(Serialize, ToSchema)]
pub struct TheaterList {
    pub theaters: Vec<Theater>,
}

/// Theaters near a point (nearest first, with `distance_km`) and/or matching a name or city.
#[utoipa::path(get, path = "/v1/theaters", tag = "browse", params(TheaterSearch),
    responses((status = 200, body = TheaterList),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn search(
    State(state): State<AppState>,
    AppQuery(query): AppQuery<TheaterSearch>,
) -> Result<axum::Json<TheaterList>, ApiError> {
    let mut errors = Errors::default();
    let near = super::dto::near(&mut errors, query.lat, query.lon, query.radius_km);
    let q = errors.optional_text("q", query.q.as_deref(), 100);
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        errors.add("limit", "must be 1 to 100");
    }
    errors.finish()?;
    let rows = read::search(&state.pool, near, q.as_deref(), limit).await?;
    Ok(axum::Json(TheaterList {
        theaters: rows.into_iter().map(Theater::from).collect(),
    }))
}

/// Change a theater's name, address, city, location or time zone (admin).
#[utoipa::path(patch, path = "/v1/theaters/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = TheaterPatch,
    responses((status = 200, body = Theater), (status = 403, description = "not an admin", body = crate::error::Problem, content_type = "application/problem+json"), (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn update(
    State(state): State<AppState>,
    Admin(admin): Admin,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<TheaterPatch>,
) -> Result<axum::Json<Theater>, ApiError> {
    let mut errors = Errors::default();
    let changes = TheaterChanges {
        name: body.name.map(|v| errors.text("name", &v, 200)),
        address: body.address.map(|v| errors.text("address", &v, 500)),
        city: body.city.map(|v| errors.text("city", &v, 200)),
        location: body
            .location
            .map(|l| check_location(&mut errors, "location", l)),
        timezone: body.timezone.map(|v| check_timezone(&mut errors, &v)),
    };
    errors.finish()?;
    if let Some(tz) = &changes.timezone {
        check_known_timezone(&state, tz).await?;
    }
    let meta = admin.metadata();
    let (theater, _) = state
        .store
        .execute::<TheaterAggregate>(&id.to_string(), TheaterCommand::Update(changes), &meta)
        .await??;
    Ok(axum::Json(
        Theater::from_aggregate(&theater).ok_or(ApiError::NotFound)?,
    ))
}
