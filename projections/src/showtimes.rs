//! Showtimes, listed by movie, theater and date.

use crate::bulk::{BulkWriter, CopyRows};
use crate::projection::money_json;
use crate::projection::{decode, Projection, ProjectionError};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use marquee_domain::seating::SeatLayout;
use marquee_domain::showtime::{Showtime, ShowtimeDetails, ShowtimeEvent};
use marquee_event_store::envelope::Envelope;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, QueryBuilder};
use uuid::Uuid;

/// SQL for the number of seats of showtime `st` available right now: its capacity less the
/// seats sold or in a hold that is still running, from the seat map read model. (Counted this
/// way, a showtime whose seat rows are not projected yet shows all seats free, not none.)
pub const SEATS_AVAILABLE: &str = "(st.capacity - (select count(*) from seats_view s
      where s.showtime_id = st.id
        and (s.ticket_id is not null or s.held_until > now())))";

pub struct Showtimes;

#[async_trait]
impl Projection for Showtimes {
    fn name(&self) -> &'static str {
        "showtimes"
    }
    fn aggregate_type(&self) -> &'static str {
        "Showtime"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["showtimes_view"]
    }

    async fn apply(&self, event: &Envelope, db: &mut PgConnection) -> Result<(), ProjectionError> {
        match decode::<ShowtimeEvent>(event)? {
            ShowtimeEvent::ShowtimeScheduled { id, details, .. } => {
                let capacity = SeatLayout::parse(&details.layout).map_or(0, |l| l.capacity());
                let prices = prices_json(&details);
                sqlx::query(
                    "insert into showtimes_view (id, movie_id, theater_id, screen_id, starts_at,
                                                 ends_at, format, prices, capacity)
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict (id) do nothing",
                )
                .bind(id.0)
                .bind(details.movie_id.0)
                .bind(details.theater_id.0)
                .bind(details.screen_id.0)
                .bind(details.starts_at)
                .bind(details.ends_at)
                .bind(details.format)
                .bind(prices)
                .bind(capacity as i32)
                .execute(db)
                .await?;
            }
            ShowtimeEvent::ShowtimeCancelled { .. } => {
                sqlx::query("update showtimes_view set cancelled = true where id = $1")
                    .bind(event.aggregate_id.parse::<Uuid>().unwrap_or_default())
                    .execute(db)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn prices_json(d: &ShowtimeDetails) -> Value {
    d.prices
        .iter()
        .map(|(k, m)| (k.as_str().to_owned(), money_json(m)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Bulk rebuilds: streams one row per scheduled showtime into `showtimes_view`.
pub struct BulkShowtimes {
    rows: CopyRows,
}

impl BulkShowtimes {
    pub async fn start(pool: &PgPool, schema: &str) -> Result<Self, sqlx::Error> {
        let rows = CopyRows::start(
            pool,
            schema,
            "showtimes_view",
            "id, movie_id, theater_id, screen_id, starts_at, ends_at, format, prices, cancelled, \
             capacity",
        )
        .await?;
        Ok(Self { rows })
    }
}

#[async_trait]
impl BulkWriter<Showtime> for BulkShowtimes {
    async fn write(&mut self, s: &Showtime) -> Result<(), sqlx::Error> {
        let (Some(id), Some(d)) = (s.id, &s.details) else {
            return Ok(());
        };
        self.rows
            .uuid(id.0)
            .uuid(d.movie_id.0)
            .uuid(d.theater_id.0)
            .uuid(d.screen_id.0)
            .time(Some(d.starts_at))
            .time(Some(d.ends_at));
        match &d.format {
            Some(format) => self.rows.text(format),
            None => self.rows.null(),
        };
        self.rows
            .jsonb(&prices_json(d))
            .boolean(s.cancelled_at.is_some())
            .int4(s.layout().capacity());
        self.rows.end_row().await
    }

    async fn finish(self: Box<Self>) -> Result<(), sqlx::Error> {
        self.rows.finish().await?;
        Ok(())
    }
}

/// A showtime as served.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct ShowtimeRow {
    pub id: Uuid,
    pub movie_id: Uuid,
    pub theater_id: Uuid,
    pub screen_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub format: Option<String>,
    pub prices: Value,
    pub cancelled: bool,
    pub capacity: i32,
    pub seats_available: i64,
}

fn select() -> QueryBuilder<'static, sqlx::Postgres> {
    let mut b = QueryBuilder::new(
        "select st.id, st.movie_id, st.theater_id, st.screen_id, st.starts_at, st.ends_at,
                st.format, st.prices, st.cancelled, st.capacity, ",
    );
    b.push(SEATS_AVAILABLE);
    b.push(" as seats_available from showtimes_view st join theaters_view t on t.id = st.theater_id where true");
    b
}

/// One showtime.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<ShowtimeRow>, sqlx::Error> {
    let mut b = select();
    b.push(" and st.id = ").push_bind(id);
    b.build_query_as().fetch_optional(pool).await
}

/// Which showtimes to list.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub movie_id: Option<Uuid>,
    pub theater_id: Option<Uuid>,
    /// A calendar day in the theater's time zone; `None` for everything from now on.
    pub date: Option<NaiveDate>,
}

/// Showtimes matching `filter`, soonest first (cancelled ones included, marked).
pub async fn list(
    pool: &PgPool,
    filter: &Filter,
    now: DateTime<Utc>,
) -> Result<Vec<ShowtimeRow>, sqlx::Error> {
    let mut b = select();
    if let Some(m) = filter.movie_id {
        b.push(" and st.movie_id = ").push_bind(m);
    }
    if let Some(t) = filter.theater_id {
        b.push(" and st.theater_id = ").push_bind(t);
    }
    match filter.date {
        Some(date) => {
            b.push(" and (st.starts_at at time zone t.timezone)::date = ")
                .push_bind(date);
        }
        None => {
            b.push(" and st.starts_at > ").push_bind(now);
        }
    }
    b.push(" order by st.starts_at, st.id limit 1000");
    b.build_query_as().fetch_all(pool).await
}
