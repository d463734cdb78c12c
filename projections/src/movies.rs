//! Movies, and the movies playing near a point with their upcoming showtimes.

use crate::bulk::BulkWriter;
use crate::projection::{decode, Projection, ProjectionError};
use crate::theaters::{contains_pattern, push_distance, push_near_filter, Near};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use marquee_domain::movie::{Movie, MovieDetails, MovieEvent};
use marquee_event_store::envelope::Envelope;
use sqlx::{PgConnection, PgPool, QueryBuilder};
use uuid::Uuid;

pub struct Movies;

#[async_trait]
impl Projection for Movies {
    fn name(&self) -> &'static str {
        "movies"
    }
    fn aggregate_type(&self) -> &'static str {
        "Movie"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["movies_view"]
    }

    async fn apply(&self, event: &Envelope, db: &mut PgConnection) -> Result<(), ProjectionError> {
        match decode::<MovieEvent>(event)? {
            MovieEvent::MovieAdded { id, details } => insert(db, id.0, details).await?,
            MovieEvent::MovieUpdated(c) => {
                let id: Uuid = event.aggregate_id.parse().unwrap_or_default();
                sqlx::query(
                    "update movies_view set title = coalesce($2, title),
                        runtime_minutes = coalesce($3, runtime_minutes),
                        rating = coalesce($4, rating), genres = coalesce($5, genres),
                        language = coalesce($6, language),
                        release_date = coalesce($7, release_date),
                        synopsis = coalesce($8, synopsis), poster_url = coalesce($9, poster_url),
                        trailer_url = coalesce($10, trailer_url)
                     where id = $1",
                )
                .bind(id)
                .bind(c.title)
                .bind(c.runtime_minutes.map(|m| m as i32))
                .bind(c.rating)
                .bind(c.genres)
                .bind(c.language)
                .bind(c.release_date)
                .bind(c.synopsis)
                .bind(c.poster_url)
                .bind(c.trailer_url)
                .execute(db)
                .await?;
            }
        }
        Ok(())
    }
}

/// Bulk rebuilds: gathers the movies (thousands at most) and inserts them at the end.
pub struct BulkMovies {
    pool: PgPool,
    schema: String,
    movies: Vec<(Uuid, MovieDetails)>,
}

impl BulkMovies {
    pub fn new(pool: &PgPool, schema: &str) -> Self {
        Self {
            pool: pool.clone(),
            schema: schema.to_owned(),
            movies: Vec::new(),
        }
    }
}

#[async_trait]
impl BulkWriter<Movie> for BulkMovies {
    async fn write(&mut self, state: &Movie) -> Result<(), sqlx::Error> {
        if let (Some(id), Some(d)) = (state.id, &state.details) {
            self.movies.push((id.0, d.clone()));
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), sqlx::Error> {
        for chunk in self.movies.chunks(5_000) {
            let mut b = QueryBuilder::new(format!(
                "insert into {}.movies_view (id, title, runtime_minutes, rating, genres, language,
                                             release_date, synopsis, poster_url, trailer_url) ",
                self.schema
            ));
            b.push_values(chunk, |mut r, (id, d)| {
                r.push_bind(*id)
                    .push_bind(d.title.clone())
                    .push_bind(d.runtime_minutes as i32)
                    .push_bind(d.rating.clone())
                    .push_bind(d.genres.clone())
                    .push_bind(d.language.clone())
                    .push_bind(d.release_date)
                    .push_bind(d.synopsis.clone())
                    .push_bind(d.poster_url.clone())
                    .push_bind(d.trailer_url.clone());
            });
            b.build().execute(&self.pool).await?;
        }
        Ok(())
    }
}

async fn insert(db: &mut PgConnection, id: Uuid, d: MovieDetails) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into movies_view (id, title, runtime_minutes, rating, genres, language,
                                  release_date, synopsis, poster_url, trailer_url)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) on conflict (id) do nothing",
    )
    .bind(id)
    .bind(d.title)
    .bind(d.runtime_minutes as i32)
    .bind(d.rating)
    .bind(d.genres)
    .bind(d.language)
    .bind(d.release_date)
    .bind(d.synopsis)
    .bind(d.poster_url)
    .bind(d.trailer_url)
    .execute(db)
    .await?;
    Ok(())
}

/// A movie as served.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct MovieRow {
    pub id: Uuid,
    pub title: String,
    pub runtime_minutes: i32,
    pub rating: Option<String>,
    pub genres: Vec<String>,
    pub language: Option<String>,
    pub release_date: Option<NaiveDate>,
    pub synopsis: Option<String>,
    pub poster_url: Option<String>,
    pub trailer_url: Option<String>,
}

const MOVIE_COLUMNS: &str = "id, title, runtime_minutes, rating, genres, language, release_date, \
                             synopsis, poster_url, trailer_url";

/// One movie.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<MovieRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {MOVIE_COLUMNS} from movies_view where id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// An upcoming showtime of a movie, as listed under it.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct PlayingRow {
    pub id: Uuid,
    pub movie_id: Uuid,
    pub theater_id: Uuid,
    pub theater_name: String,
    pub distance_km: Option<f64>,
    pub starts_at: DateTime<Utc>,
    pub format: Option<String>,
    pub seats_available: i64,
}

/// What to look for.
#[derive(Clone, Debug, Default)]
pub struct Playing {
    pub near: Option<Near>,
    /// A calendar day in each theater's own time zone; `None` for everything from now on.
    pub date: Option<NaiveDate>,
    pub title: Option<String>,
    pub genre: Option<String>,
}

/// Most showtimes listed in one answer.
const MAX_SHOWTIMES: i64 = 2000;

/// The movies playing (not cancelled, not started) at theaters matching `filter`, each with
/// its upcoming showtimes, soonest first.
pub async fn playing(
    pool: &PgPool,
    filter: &Playing,
    now: DateTime<Utc>,
) -> Result<Vec<(MovieRow, Vec<PlayingRow>)>, sqlx::Error> {
    let mut b = QueryBuilder::new(
        "select st.id, st.movie_id, st.theater_id, t.name as theater_name, st.starts_at, st.format, ",
    );
    push_distance(&mut b, filter.near);
    b.push(", ");
    b.push(crate::showtimes::SEATS_AVAILABLE);
    b.push(
        " as seats_available
         from showtimes_view st
         join theaters_view t on t.id = st.theater_id
         join movies_view m on m.id = st.movie_id
         where not st.cancelled and st.starts_at > ",
    );
    b.push_bind(now);
    push_near_filter(&mut b, filter.near);
    if let Some(date) = filter.date {
        b.push(" and (st.starts_at at time zone t.timezone)::date = ")
            .push_bind(date);
    }
    if let Some(q) = &filter.title {
        b.push(" and m.title ilike ").push_bind(contains_pattern(q));
    }
    if let Some(g) = &filter.genre {
        b.push(" and ")
            .push_bind(g.to_lowercase())
            .push(" = any(m.genres)");
    }
    b.push(" order by st.starts_at, distance_km nulls last, st.id limit ")
        .push_bind(MAX_SHOWTIMES);
    let rows: Vec<PlayingRow> = b.build_query_as().fetch_all(pool).await?;
    let mut ids: Vec<Uuid> = rows.iter().map(|r| r.movie_id).collect();
    ids.sort();
    ids.dedup();
    let movies: Vec<MovieRow> = sqlx::query_as(&format!(
        "select {MOVIE_COLUMNS} from movies_view where id = any($1) order by title, id"
    ))
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(movies
        .into_iter()
        .map(|m| {
            let shows = rows
                .iter()
                .filter(|r| r.movie_id == m.id)
                .cloned()
                .collect();
            (m, shows)
        })
        .collect())
}
