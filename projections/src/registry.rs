//! Marquee's projections, in one list: each one's incremental projection ([`all`]) and, for
//! rebuilds, the bulk writer of each from its aggregate's final states ([`Bulk`]). The
//! machinery (`projection`, `bulk`) knows no projection; this list knows them all.

use crate::bulk::{Bulk, BulkWriter};
use crate::movies::{BulkMovies, Movies};
use crate::projection::Projection;
use crate::seat_maps::{BulkSeatMaps, SeatMaps};
use crate::showtimes::{BulkShowtimes, Showtimes};
use crate::theaters::{BulkTheaters, Theaters};
use crate::tickets::{BulkTickets, Tickets};
use async_trait::async_trait;
use marquee_domain::movie::Movie;
use marquee_domain::showtime::Showtime;
use marquee_domain::theater::Theater;
use sqlx::PgPool;
use std::sync::Arc;

/// Every projection of Marquee.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(Theaters),
        Arc::new(Movies),
        Arc::new(Showtimes),
        Arc::new(SeatMaps),
        Arc::new(Tickets),
    ]
}

#[async_trait]
impl Bulk for Theater {
    async fn writer(
        pool: &PgPool,
        projection: &str,
        schema: &str,
    ) -> Result<Box<dyn BulkWriter<Self>>, sqlx::Error> {
        match projection {
            "theaters" => Ok(Box::new(BulkTheaters::new(pool, schema))),
            other => unreachable!("no bulk writer for {other} from theaters"),
        }
    }
}

#[async_trait]
impl Bulk for Movie {
    async fn writer(
        pool: &PgPool,
        projection: &str,
        schema: &str,
    ) -> Result<Box<dyn BulkWriter<Self>>, sqlx::Error> {
        match projection {
            "movies" => Ok(Box::new(BulkMovies::new(pool, schema))),
            other => unreachable!("no bulk writer for {other} from movies"),
        }
    }
}

#[async_trait]
impl Bulk for Showtime {
    async fn writer(
        pool: &PgPool,
        projection: &str,
        schema: &str,
    ) -> Result<Box<dyn BulkWriter<Self>>, sqlx::Error> {
        Ok(match projection {
            "showtimes" => Box::new(BulkShowtimes::start(pool, schema).await?),
            "seat_maps" => Box::new(BulkSeatMaps::start(pool, schema).await?),
            "tickets" => Box::new(BulkTickets::start(pool, schema).await?),
            other => unreachable!("no bulk writer for {other} from showtimes"),
        })
    }
}
