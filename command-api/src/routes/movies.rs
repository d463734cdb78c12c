//! Movies: `POST /v1/movies`, `GET` and `PATCH /v1/movies/{id}`.

use super::dto::Errors;
use crate::auth::Admin;
use crate::error::{ApiError, AppJson, AppPath, AppQuery};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::NaiveDate;
use marquee_domain::movie::{
    Movie as MovieAggregate, MovieChanges, MovieCommand, MovieDetails, MAX_RUNTIME_MINUTES,
};
use marquee_domain::MovieId;
use marquee_projections::movies::{self as read, MovieRow, Playing};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, playing))
        .routes(routes!(get_one, update))
}

/// A movie to add, or (in a PATCH) the fields to change.
#[derive(Deserialize, ToSchema, Default)]
pub struct MovieInput {
    #[schema(example = "Heat")]
    pub title: Option<String>,
    /// 1 to 900.
    #[schema(example = 170, minimum = 1, maximum = 900)]
    pub runtime_minutes: Option<i64>,
    #[schema(example = "R")]
    pub rating: Option<String>,
    pub genres: Option<Vec<String>>,
    #[schema(example = "en")]
    pub language: Option<String>,
    pub release_date: Option<NaiveDate>,
    pub synopsis: Option<String>,
    pub poster_url: Option<String>,
    pub trailer_url: Option<String>,
}

/// A movie.
#[derive(Serialize, ToSchema)]
pub struct Movie {
    pub id: Uuid,
    pub title: String,
    pub runtime_minutes: u32,
    pub rating: Option<String>,
    pub genres: Vec<String>,
    pub language: Option<String>,
    pub release_date: Option<NaiveDate>,
    pub synopsis: Option<String>,
    pub poster_url: Option<String>,
    pub trailer_url: Option<String>,
}

impl From<MovieRow> for Movie {
    fn from(m: MovieRow) -> Self {
        Self {
            id: m.id,
            title: m.title,
            runtime_minutes: m.runtime_minutes.max(0) as u32,
            rating: m.rating,
            genres: m.genres,
            language: m.language,
            release_date: m.release_date,
            synopsis: m.synopsis,
            poster_url: m.poster_url,
            trailer_url: m.trailer_url,
        }
    }
}

impl Movie {
    pub fn from_aggregate(m: &MovieAggregate) -> Option<Self> {
        let (id, d) = (m.id?, m.details.clone()?);
        Some(Self {
            id: id.0,
            title: d.title,
            runtime_minutes: d.runtime_minutes,
            rating: d.rating,
            genres: d.genres,
            language: d.language,
            release_date: d.release_date,
            synopsis: d.synopsis,
            poster_url: d.poster_url,
            trailer_url: d.trailer_url,
        })
    }
}

fn check_runtime(errors: &mut Errors, minutes: i64) -> u32 {
    if !(1..=i64::from(MAX_RUNTIME_MINUTES)).contains(&minutes) {
        errors.add(
            "runtime_minutes",
            format!("must be 1 to {MAX_RUNTIME_MINUTES}"),
        );
        return 1;
    }
    minutes as u32
}

fn check_genres(errors: &mut Errors, genres: Vec<String>) -> Vec<String> {
    if genres.len() > 20 {
        errors.add("genres", "at most 20 genres");
    }
    genres
        .iter()
        .enumerate()
        .map(|(i, g)| errors.text(&format!("genres[{i}]"), g, 50).to_lowercase())
        .collect()
}

/// Films are from 1888 on; a date centuries ahead is a typo (and one outside Postgres's date
/// range would stop the read model).
fn check_release_date(errors: &mut Errors, date: NaiveDate) -> NaiveDate {
    use chrono::Datelike;
    if !(1888..=2200).contains(&date.year()) {
        errors.add("release_date", "must be a date from 1888 to 2200");
    }
    date
}

/// The changes a PATCH body asks for, checked.
fn parse_changes(errors: &mut Errors, b: MovieInput) -> MovieChanges {
    MovieChanges {
        title: b.title.map(|t| errors.text("title", &t, 300)),
        runtime_minutes: b.runtime_minutes.map(|m| check_runtime(errors, m)),
        rating: errors.optional_text("rating", b.rating.as_deref(), 20),
        genres: b.genres.map(|g| check_genres(errors, g)),
        language: errors.optional_text("language", b.language.as_deref(), 35),
        release_date: b.release_date.map(|d| check_release_date(errors, d)),
        synopsis: errors.optional_text("synopsis", b.synopsis.as_deref(), 5000),
        poster_url: errors.optional_url("poster_url", b.poster_url.as_deref()),
        trailer_url: errors.optional_url("trailer_url", b.trailer_url.as_deref()),
    }
}

fn parse_new(body: MovieInput) -> Result<MovieDetails, ApiError> {
    let mut errors = Errors::default();
    if body.title.is_none() {
        errors.add("title", "is required");
    }
    if body.runtime_minutes.is_none() {
        errors.add("runtime_minutes", "is required");
    }
    let c = parse_changes(&mut errors, body);
    errors.finish()?;
    Ok(MovieDetails {
        title: c.title.unwrap_or_default(),
        runtime_minutes: c.runtime_minutes.unwrap_or_default(),
        rating: c.rating,
        genres: c.genres.unwrap_or_default(),
        language: c.language,
        release_date: c.release_date,
        synopsis: c.synopsis,
        poster_url: c.poster_url,
        trailer_url: c.trailer_url,
    })
}

/// Add a movie to the catalog (admin).
#[utoipa::path(post, path = "/v1/movies", tag = "catalog", security(("bearer" = [])),
    request_body = MovieInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe")),
    responses((status = 201, body = Movie), (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    AppJson(body): AppJson<MovieInput>,
) -> Result<(StatusCode, axum::Json<Movie>), ApiError> {
    let details = parse_new(body)?;
    let id = MovieId(Uuid::now_v7());
    let (movie, _) = state
        .store
        .execute::<MovieAggregate>(
            &id.to_string(),
            MovieCommand::Add { id, details },
            &admin.metadata(),
        )
        .await??;
    let body = Movie::from_aggregate(&movie).expect("the movie was just added");
    Ok((StatusCode::CREATED, axum::Json(body)))
}

/// Load a movie aggregate, or 404.
pub async fn load(state: &AppState, id: Uuid) -> Result<MovieAggregate, ApiError> {
    let (movie, _) = state.store.load::<MovieAggregate>(&id.to_string()).await?;
    movie.id.map(|_| movie).ok_or(ApiError::NotFound)
}

/// A movie.
#[utoipa::path(get, path = "/v1/movies/{id}", tag = "catalog", params(("id" = Uuid, Path)),
    responses((status = 200, body = Movie), (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn get_one(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<axum::Json<Movie>, ApiError> {
    if let Some(row) = read::get(&state.pool, id).await? {
        return Ok(axum::Json(row.into()));
    }
    // Not projected yet (just created): answer from the event store.
    let movie = load(&state, id).await?;
    Ok(axum::Json(
        Movie::from_aggregate(&movie).ok_or(ApiError::NotFound)?,
    ))
}

/// Change some fields of a movie (admin).
#[utoipa::path(patch, path = "/v1/movies/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = MovieInput,
    responses((status = 200, body = Movie), (status = 403, description = "not an admin", body = crate::error::Problem, content_type = "application/problem+json"), (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn update(
    State(state): State<AppState>,
    Admin(admin): Admin,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<MovieInput>,
) -> Result<axum::Json<Movie>, ApiError> {
    let mut errors = Errors::default();
    let changes = parse_changes(&mut errors, body);
    errors.finish()?;
    let (movie, _) = state
        .store
        .execute::<MovieAggregate>(
            &id.to_string(),
            MovieCommand::Update(changes),
            &admin.metadata(),
        )
        .await??;
    Ok(axum::Json(
        Movie::from_aggregate(&movie).ok_or(ApiError::NotFound)?,
    ))
}

/// Which movies to list.
#[derive(Deserialize, IntoParams)]
pub struct PlayingQuery {
    /// Latitude of the point to search near (with `lon`).
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Kilometres around the point; default 25, at most 500.
    pub radius_km: Option<f64>,
    /// A day (`YYYY-MM-DD`) in each theater's time zone; default: everything from now on.
    pub date: Option<NaiveDate>,
    /// Text the title contains.
    pub q: Option<String>,
    /// A genre the movie has.
    pub genre: Option<String>,
}

/// An upcoming showtime of a movie.
#[derive(Serialize, ToSchema)]
pub struct PlayingShowtime {
    pub id: Uuid,
    pub theater_id: Uuid,
    pub theater_name: String,
    /// Kilometres from the searched point (searches near a point only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
    pub starts_at: chrono::DateTime<chrono::Utc>,
    pub format: Option<String>,
    pub seats_available: i64,
}

/// A movie with its upcoming showtimes.
#[derive(Serialize, ToSchema)]
pub struct PlayingMovie {
    #[serde(flatten)]
    pub movie: Movie,
    pub showtimes: Vec<PlayingShowtime>,
}

/// Movies found.
#[derive(Serialize, ToSchema)]
pub struct MovieList {
    pub movies: Vec<PlayingMovie>,
}

/// The movies playing at theaters near a point (on a date, or from now on), each with its
/// upcoming showtimes, soonest first.
#[utoipa::path(get, path = "/v1/movies", tag = "browse", params(PlayingQuery),
    responses((status = 200, body = MovieList),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn playing(
    State(state): State<AppState>,
    AppQuery(query): AppQuery<PlayingQuery>,
) -> Result<axum::Json<MovieList>, ApiError> {
    let mut errors = Errors::default();
    let near = super::dto::near(&mut errors, query.lat, query.lon, query.radius_km);
    let title = errors.optional_text("q", query.q.as_deref(), 100);
    let genre = errors.optional_text("genre", query.genre.as_deref(), 50);
    errors.finish()?;
    let filter = Playing {
        near,
        date: query.date,
        title,
        genre,
    };
    let found = read::playing(
        &state.pool,
        &filter,
        marquee_event_store::event_store::now(),
    )
    .await?;
    let movies = found
        .into_iter()
        .map(|(movie, shows)| PlayingMovie {
            movie: movie.into(),
            showtimes: shows
                .into_iter()
                .map(|s| PlayingShowtime {
                    id: s.id,
                    theater_id: s.theater_id,
                    theater_name: s.theater_name,
                    distance_km: s.distance_km.map(|d| (d * 1000.0).round() / 1000.0),
                    starts_at: s.starts_at,
                    format: s.format,
                    seats_available: s.seats_available,
                })
                .collect(),
        })
        .collect();
    Ok(axum::Json(MovieList { movies }))
}
