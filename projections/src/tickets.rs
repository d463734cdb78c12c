//! Each customer's tickets, with their status (refunds included).

use crate::bulk::{BulkWriter, CopyRows};
use crate::projection::money_json;
use crate::projection::{decode, Projection, ProjectionError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marquee_domain::showtime::{Showtime, ShowtimeEvent, TicketStatus};
use marquee_nats::Envelope;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub struct Tickets;

#[async_trait]
impl Projection for Tickets {
    fn name(&self) -> &'static str {
        "tickets"
    }
    fn aggregate_type(&self) -> &'static str {
        "Showtime"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["tickets_view"]
    }

    async fn apply(&self, event: &Envelope, db: &mut PgConnection) -> Result<(), ProjectionError> {
        let showtime: Uuid = event.aggregate_id.parse().unwrap_or_default();
        match decode::<ShowtimeEvent>(event)? {
            ShowtimeEvent::TicketsIssued(e) => {
                for t in e.tickets {
                    sqlx::query(
                        "insert into tickets_view (ticket_id, customer_id, reservation_id,
                             showtime_id, seat, price, code, status, issued_at)
                         values ($1, $2, $3, $4, $5, $6, $7, 'valid', $8)
                         on conflict (ticket_id) do nothing",
                    )
                    .bind(t.ticket_id.0)
                    .bind(e.customer_id.0)
                    .bind(e.reservation_id.0)
                    .bind(showtime)
                    .bind(t.seat.as_str())
                    .bind(money_json(&t.price))
                    .bind(&t.code)
                    .bind(e.issued_at)
                    .execute(&mut *db)
                    .await?;
                }
            }
            ShowtimeEvent::TicketRefunded(r) => {
                sqlx::query("update tickets_view set status = 'refunded' where ticket_id = $1")
                    .bind(r.ticket_id.0)
                    .execute(db)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Bulk rebuilds: streams every ticket of every showtime into `tickets_view`.
pub struct BulkTickets {
    rows: CopyRows,
}

impl BulkTickets {
    pub async fn start(pool: &PgPool, schema: &str) -> Result<Self, sqlx::Error> {
        let rows = CopyRows::start(
            pool,
            schema,
            "tickets_view",
            "ticket_id, customer_id, reservation_id, showtime_id, seat, price, code, status, \
             issued_at",
        )
        .await?;
        Ok(Self { rows })
    }
}

#[async_trait]
impl BulkWriter<Showtime> for BulkTickets {
    async fn write(&mut self, s: &Showtime) -> Result<(), sqlx::Error> {
        let Some(showtime) = s.id else {
            return Ok(());
        };
        for t in s.tickets.values() {
            self.rows
                .uuid(t.id.0)
                .uuid(t.customer_id.0)
                .uuid(t.reservation_id.0)
                .uuid(showtime.0)
                .text(t.seat.as_str())
                .jsonb(&money_json(&t.price))
                .text(&t.code)
                .text(match t.status {
                    TicketStatus::Valid => "valid",
                    TicketStatus::Refunded => "refunded",
                })
                .time(Some(t.issued_at));
            self.rows.end_row().await?;
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), sqlx::Error> {
        self.rows.finish().await?;
        Ok(())
    }
}

/// A ticket as served, with what is printed on it.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct TicketRow {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub reservation_id: Uuid,
    pub showtime_id: Uuid,
    pub movie_title: String,
    pub theater_name: String,
    pub screen_name: String,
    pub starts_at: DateTime<Utc>,
    pub seat: String,
    pub price: Value,
    /// `valid` or `refunded`.
    pub status: String,
    pub code: String,
}

const SELECT: &str = "select k.ticket_id as id, k.customer_id, k.reservation_id, k.showtime_id,
        coalesce(m.title, '') as movie_title, coalesce(t.name, '') as theater_name,
        coalesce((select s->>'name' from jsonb_array_elements(t.screens) s
                  where s->>'id' = st.screen_id::text), '') as screen_name,
        st.starts_at, k.seat, k.price, k.status, k.code
   from tickets_view k
   join showtimes_view st on st.id = k.showtime_id
   left join movies_view m on m.id = st.movie_id
   left join theaters_view t on t.id = st.theater_id";

/// One ticket.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<TicketRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} where k.ticket_id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A customer's tickets: upcoming ones first (soonest first), then past ones (latest first).
pub async fn of_customer(
    pool: &PgPool,
    customer: Uuid,
    upcoming: Option<bool>,
    now: DateTime<Utc>,
) -> Result<Vec<TicketRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} where k.customer_id = $1
           and ($2::boolean is null or (st.starts_at > $3) = $2)
         order by st.starts_at > $3 desc,
                  case when st.starts_at > $3 then st.starts_at end asc,
                  st.starts_at desc, k.seat"
    ))
    .bind(customer)
    .bind(upcoming)
    .bind(now)
    .fetch_all(pool)
    .await
}
