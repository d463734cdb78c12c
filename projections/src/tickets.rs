//! Each customer's tickets, with their status (refunds included).

use crate::bulk::{BulkWriter, CopyRows};
use crate::projection::money_json;
use crate::projection::{decode, Projection, ProjectionError};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use marquee_domain::showtime::{Showtime, ShowtimeEvent, TicketStatus};
use marquee_event_store::envelope::Envelope;
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

/// Where a page of a customer's tickets ended: the last ticket's place in the listing's order,
/// and the instant that splits upcoming tickets from past ones for the whole listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Cursor {
    /// Upcoming means starting after this. Chosen for the first page and kept by the next
    /// ones: a showtime that starts while the customer pages through keeps its place, rather
    /// than moving from the upcoming part to the past one (shown twice, or never).
    pub split: DateTime<Utc>,
    pub starts_at: DateTime<Utc>,
    pub seat: String,
    pub id: Uuid,
}

/// Marks the layout of an encoded [`Cursor`], so another layout can be told apart later.
const CURSOR_LAYOUT: u8 = 1;

impl Cursor {
    /// Text to hand out and take back: hex of the layout byte, `split` and `starts_at` in
    /// microseconds (the precision of the database), the ticket id, then the seat.
    pub fn encode(&self) -> String {
        let mut bytes = vec![CURSOR_LAYOUT];
        bytes.extend(self.split.timestamp_micros().to_be_bytes());
        bytes.extend(self.starts_at.timestamp_micros().to_be_bytes());
        bytes.extend(self.id.as_bytes());
        bytes.extend(self.seat.as_bytes());
        hex::encode(bytes)
    }

    /// The cursor `text` encodes; `None` for anything [`Cursor::encode`] does not make.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        let (&layout, rest) = bytes.split_first()?;
        if layout != CURSOR_LAYOUT || rest.len() < 32 {
            return None;
        }
        let (times, rest) = rest.split_at(16);
        let (id, seat) = rest.split_at(16);
        let micros = |b: &[u8]| b.try_into().ok().map(i64::from_be_bytes);
        Some(Self {
            split: DateTime::from_timestamp_micros(micros(&times[..8])?)?,
            starts_at: DateTime::from_timestamp_micros(micros(&times[8..])?)?,
            id: Uuid::from_slice(id).ok()?,
            seat: String::from_utf8(seat.to_vec()).ok()?,
        })
    }
}

/// Up to `limit` of a customer's tickets: upcoming ones first (soonest first), then past ones
/// (latest first), each showtime's by seat. The first page splits upcoming from past at
/// `now`; later ones go on after `after`, at its split. Also returns where the next page
/// starts, if there are more tickets.
pub async fn of_customer(
    pool: &PgPool,
    customer: Uuid,
    upcoming: Option<bool>,
    now: DateTime<Utc>,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<(Vec<TicketRow>, Option<Cursor>), sqlx::Error> {
    // Microseconds, as stored: the split must survive a trip through a cursor unchanged.
    let split = after.map_or_else(|| now.trunc_subsecs(6), |c| c.split);
    let mut rows: Vec<TicketRow> = sqlx::query_as(&format!(
        "{SELECT} where k.customer_id = $1
           and ($2::boolean is null or (st.starts_at > $3) = $2)
           and ($4::timestamptz is null or case
                 -- after an upcoming ticket: later upcoming ones, then every past one
                 when $4 > $3 then st.starts_at <= $3
                      or (st.starts_at, k.seat, k.ticket_id) > ($4, $5::text, $6::uuid)
                 -- after a past ticket: earlier past ones
                 else st.starts_at <= $3 and (st.starts_at < $4
                      or (st.starts_at = $4 and (k.seat, k.ticket_id) > ($5::text, $6::uuid)))
               end)
         order by st.starts_at > $3 desc,
                  case when st.starts_at > $3 then st.starts_at end asc,
                  st.starts_at desc, k.seat, k.ticket_id
         limit $7"
    ))
    .bind(customer)
    .bind(upcoming)
    .bind(split)
    .bind(after.map(|c| c.starts_at))
    .bind(after.map(|c| c.seat.as_str()))
    .bind(after.map(|c| c.id))
    // One more than asked: whether it exists says whether there is a next page.
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit.max(0) as usize);
    let next = rows.last().filter(|_| more).map(|last| Cursor {
        split,
        starts_at: last.starts_at,
        seat: last.seat.clone(),
        id: last.id,
    });
    Ok((rows, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Cursor {
        Cursor {
            split: DateTime::from_timestamp_micros(1_800_000_000_123_456).expect("in range"),
            starts_at: DateTime::from_timestamp_micros(1_700_000_000_000_001).expect("in range"),
            seat: "AA12".into(),
            id: Uuid::now_v7(),
        }
    }

    #[test]
    fn a_cursor_comes_back_as_it_was_handed_out() {
        let c = cursor();
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
    }

    #[test]
    fn text_that_no_cursor_encodes_to_is_refused() {
        let good = cursor().encode();
        for bad in [
            "",
            "zz",
            "01",
            &good[..good.len() - 9],
            &format!("02{}", &good[2..]),
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
        let not_utf8 = format!("{}ff", &good[..66]);
        assert_eq!(Cursor::decode(&not_utf8), None);
    }
}
