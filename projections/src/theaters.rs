//! Theaters, searchable near a point (nearest first) and by name or city.
//!
//! "Near" uses earthdistance over cube: `ll_to_earth(lat, lon)` is indexed with GiST and
//! `earth_box` narrows candidates through that index before the exact `earth_distance` check.

use crate::bulk::BulkWriter;
use crate::projection::{decode, Projection, ProjectionError};
use async_trait::async_trait;
use marquee_domain::seating::SeatLayout;
use marquee_domain::theater::{Screen, Theater, TheaterChanges, TheaterEvent};
use marquee_event_store::envelope::Envelope;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

pub struct Theaters;

#[async_trait]
impl Projection for Theaters {
    fn name(&self) -> &'static str {
        "theaters"
    }
    fn aggregate_type(&self) -> &'static str {
        "Theater"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["theaters_view"]
    }

    async fn apply(&self, event: &Envelope, db: &mut PgConnection) -> Result<(), ProjectionError> {
        match decode::<TheaterEvent>(event)? {
            TheaterEvent::TheaterAdded {
                id,
                details,
                screens,
            } => {
                let screens = screens_json(&screens);
                sqlx::query(
                    "insert into theaters_view (id, name, address, city, lat, lon, timezone, screens)
                     values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (id) do nothing",
                )
                .bind(id.0)
                .bind(&details.name)
                .bind(&details.address)
                .bind(&details.city)
                .bind(details.location.lat)
                .bind(details.location.lon)
                .bind(&details.timezone)
                .bind(screens)
                .execute(db)
                .await?;
            }
            TheaterEvent::TheaterUpdated(changes) => {
                update(db, &event.aggregate_id, changes).await?
            }
            TheaterEvent::ScreenSlotBooked(_) | TheaterEvent::ScreenSlotReleased { .. } => {}
        }
        Ok(())
    }
}

/// The screens as the read model stores them.
fn screens_json(screens: &[Screen]) -> Value {
    screens
        .iter()
        .map(|s| {
            let capacity = SeatLayout::parse(&s.layout).map_or(0, |l| l.capacity());
            json!({"id": s.id, "name": s.name, "layout": s.layout, "capacity": capacity})
        })
        .collect()
}

/// Bulk rebuilds: gathers the theaters (a chain has hundreds, not millions) and inserts them
/// at the end.
pub struct BulkTheaters {
    pool: PgPool,
    schema: String,
    theaters: Vec<Theater>,
}

impl BulkTheaters {
    pub fn new(pool: &PgPool, schema: &str) -> Self {
        Self {
            pool: pool.clone(),
            schema: schema.to_owned(),
            theaters: Vec::new(),
        }
    }
}

#[async_trait]
impl BulkWriter<Theater> for BulkTheaters {
    async fn write(&mut self, state: &Theater) -> Result<(), sqlx::Error> {
        if state.exists() {
            self.theaters.push(state.clone());
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), sqlx::Error> {
        for chunk in self.theaters.chunks(5_000) {
            let mut b = QueryBuilder::new(format!(
                "insert into {}.theaters_view (id, name, address, city, lat, lon, timezone, screens) ",
                self.schema
            ));
            b.push_values(chunk, |mut r, t| {
                let d = t.details.as_ref().expect("added");
                r.push_bind(t.id.expect("added").0)
                    .push_bind(d.name.clone())
                    .push_bind(d.address.clone())
                    .push_bind(d.city.clone())
                    .push_bind(d.location.lat)
                    .push_bind(d.location.lon)
                    .push_bind(d.timezone.clone())
                    .push_bind(screens_json(&t.screens));
            });
            b.build().execute(&self.pool).await?;
        }
        Ok(())
    }
}

async fn update(db: &mut PgConnection, id: &str, c: TheaterChanges) -> Result<(), sqlx::Error> {
    let id: Uuid = id.parse().unwrap_or_default();
    sqlx::query(
        "update theaters_view set name = coalesce($2, name), address = coalesce($3, address),
                city = coalesce($4, city), lat = coalesce($5, lat), lon = coalesce($6, lon),
                timezone = coalesce($7, timezone)
         where id = $1",
    )
    .bind(id)
    .bind(c.name)
    .bind(c.address)
    .bind(c.city)
    .bind(c.location.map(|l| l.lat))
    .bind(c.location.map(|l| l.lon))
    .bind(c.timezone)
    .execute(db)
    .await?;
    Ok(())
}

/// A theater as served.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct TheaterRow {
    pub id: Uuid,
    pub name: String,
    pub address: String,
    pub city: String,
    pub lat: f64,
    pub lon: f64,
    pub timezone: String,
    pub screens: Value,
    /// Distance from the searched point, when one was given.
    pub distance_km: Option<f64>,
}

/// A point and a radius.
#[derive(Clone, Copy, Debug)]
pub struct Near {
    pub lat: f64,
    pub lon: f64,
    pub radius_km: f64,
}

/// The `ilike` pattern matching `q` anywhere, with `%`, `_` and `\` taken literally.
pub fn contains_pattern(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Adds `<distance in km> as distance_km` (or null) to a select list over alias `t`.
pub fn push_distance(b: &mut QueryBuilder<'_, Postgres>, near: Option<Near>) {
    match near {
        Some(n) => {
            b.push("earth_distance(ll_to_earth(");
            b.push_bind(n.lat).push(", ").push_bind(n.lon);
            b.push("), ll_to_earth(t.lat, t.lon)) / 1000.0 as distance_km");
        }
        None => {
            b.push("null::float8 as distance_km");
        }
    }
}

/// Adds ` and <t within the radius>`: the `earth_box` test can use the GiST index.
pub fn push_near_filter(b: &mut QueryBuilder<'_, Postgres>, near: Option<Near>) {
    if let Some(n) = near {
        let meters = n.radius_km * 1000.0;
        b.push(" and earth_box(ll_to_earth(");
        b.push_bind(n.lat).push(", ").push_bind(n.lon).push("), ");
        b.push_bind(meters).push(") @> ll_to_earth(t.lat, t.lon)");
        b.push(" and earth_distance(ll_to_earth(");
        b.push_bind(n.lat)
            .push(", ")
            .push_bind(n.lon)
            .push("), ll_to_earth(t.lat, t.lon)) <= ");
        b.push_bind(meters);
    }
}

/// Theaters near a point (nearest first) and/or whose name or city contains `q`.
pub async fn search(
    pool: &PgPool,
    near: Option<Near>,
    q: Option<&str>,
    limit: i64,
) -> Result<Vec<TheaterRow>, sqlx::Error> {
    search_query("", near, q, limit)
        .build_query_as()
        .fetch_all(pool)
        .await
}

/// The search's SQL, after `prefix` (e.g. `explain`, to check the plan).
pub fn search_query<'a>(
    prefix: &str,
    near: Option<Near>,
    q: Option<&str>,
    limit: i64,
) -> QueryBuilder<'a, Postgres> {
    let mut b = QueryBuilder::new(format!(
        "{prefix} select t.id, t.name, t.address, t.city, t.lat, t.lon, t.timezone, t.screens, "
    ));
    push_distance(&mut b, near);
    b.push(" from theaters_view t where true");
    push_near_filter(&mut b, near);
    if let Some(q) = q {
        let pattern = contains_pattern(q);
        b.push(" and (t.name ilike ").push_bind(pattern.clone());
        b.push(" or t.city ilike ").push_bind(pattern).push(")");
    }
    b.push(" order by distance_km nulls last, t.name, t.id limit ")
        .push_bind(limit);
    b
}

/// One theater.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<TheaterRow>, sqlx::Error> {
    sqlx::query_as(
        "select id, name, address, city, lat, lon, timezone, screens, null::float8 as distance_km
         from theaters_view where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Whether PostgreSQL knows the IANA time zone `name`: the read models compute a showtime's
/// local date in its theater's zone (`at time zone`), so a theater must not have another.
pub async fn is_known_time_zone(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists(select 1 from pg_timezone_names where name = $1)")
        .bind(name)
        .fetch_one(pool)
        .await
}
