//! R, the seed design's Redis seat locks: each command is one Lua script (`EVALSHA`), so a
//! hold takes all its seats or none, with nothing else running in between.
//!
//! Redis runs as its own `redis-server` process for the run, with `appendonly yes` and
//! `appendfsync always`: a write is answered only after it is in the append-only file and
//! fsynced, the durability the engine gives with PostgreSQL. The scripts read the clock with
//! `TIME` and push a record of what they decided onto the showtime's `events` list in the same
//! script, so the history is in exactly the order the decisions were made; [`RedisStore`]
//! turns those records into the domain's events for the auditor.

use super::{labels, ticket_code, total_of, Held, SeatStore, HOLD_FOR, PIN_FOR};
use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marquee_api::error::ApiError;
use marquee_domain::showtime::{
    IssuedTicket, PaymentStarted, ReleaseReason, SeatsHeld, ShowtimeEvent, TicketsIssued,
};
use marquee_domain::{Money, PaymentId, ReservationId, SeatLabel, ShowtimeId, TicketId, UserId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// A `redis-server` of this run, killed when dropped (also when the run fails).
pub struct RedisServer {
    child: tokio::process::Child,
    dir: PathBuf,
    /// The URL clients connect to.
    pub url: String,
}

impl RedisServer {
    /// Starts one on a free port, with its append-only file in a fresh directory of the
    /// temporary directory (on this machine the disk PostgreSQL writes to), and waits until it
    /// answers.
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("marquee-bench-redis-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&dir)
            .args(["--daemonize", "no", "--logfile", "redis.log"])
            .kill_on_drop(true)
            .spawn()
            .context("cannot start redis-server (is it installed?)")?;
        let server = Self {
            child,
            dir,
            url: format!("redis://127.0.0.1:{port}/"),
        };
        server.wait_until_ready().await?;
        Ok(server)
    }

    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url.as_str())?;
        for _ in 0..100 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("redis-server did not answer at {}", self.url)
    }

    /// Stops the server and removes its files.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // `kill_on_drop` ends the process; its files go too.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// R's seat store.
pub struct RedisStore {
    conn: ConnectionManager,
    hold: Script,
    settle: Script,
    price: Money,
}

impl RedisStore {
    /// Connects to `server`. Every seat of the benchmark costs `price`.
    pub async fn connect(server: &RedisServer, price: Money) -> anyhow::Result<Self> {
        let client = redis::Client::open(server.url.as_str())?;
        Ok(Self {
            // One multiplexed connection: Redis runs scripts one at a time anyway, and
            // pipelining many callers over one socket is how its clients scale. Its answers
            // may wait as long as the load's own requests do: the client's default of
            // 500 ms turned R's slowest holds at 256 clients into errors (`500`), which the
            // engine, with no such timeout towards PostgreSQL, never counted.
            conn: ConnectionManager::new_with_config(
                client,
                ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(60))),
            )
            .await?,
            hold: Script::new(include_str!("hold.lua")),
            settle: Script::new(include_str!("settle.lua")),
            price,
        })
    }

    fn showtime_key(showtime: ShowtimeId, part: &str) -> String {
        format!("bl:{showtime}:{part}")
    }

    async fn settle(&self, args: Vec<String>) -> Result<Vec<String>, ApiError> {
        let mut invocation = self.settle.prepare_invoke();
        for a in args {
            invocation.arg(a);
        }
        let answer: Vec<String> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        match answer.first().map(String::as_str) {
            Some("not_found") => Err(ApiError::NotFound),
            Some("paid") => Err(ApiError::Conflict("the reservation is paid".into())),
            Some("expired") => Err(ApiError::ReservationExpired(
                "the hold has expired or was released".into(),
            )),
            _ => Ok(answer),
        }
    }

    fn event_of(&self, record: Record) -> anyhow::Result<Vec<ShowtimeEvent>> {
        Ok(match record {
            Record::Held {
                r,
                c,
                seats,
                at,
                exp,
            } => {
                let seats = seats
                    .iter()
                    .map(|s| SeatLabel::parse(s))
                    .collect::<Result<Vec<_>, _>>()?;
                vec![ShowtimeEvent::SeatsHeld(SeatsHeld {
                    reservation_id: r,
                    customer_id: c,
                    total: total_of(&self.price, seats.len()),
                    seats,
                    held_at: micros(&at)?,
                    expires_at: micros(&exp)?,
                    row_started_at: None,
                })]
            }
            Record::Released { r, why, at } => vec![ShowtimeEvent::HoldReleased {
                reservation_id: r,
                reason: if why == "replaced" {
                    ReleaseReason::Replaced
                } else {
                    ReleaseReason::Customer
                },
                released_at: micros(&at)?,
            }],
            Record::Sold {
                r,
                c,
                pay,
                tickets,
                at,
            } => sold_events(r, c, pay, tickets, &self.price, micros(&at)?)?,
        })
    }
}

/// What a script pushed onto a showtime's history.
#[derive(Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
enum Record {
    Held {
        r: ReservationId,
        c: UserId,
        seats: Vec<String>,
        at: String,
        exp: String,
    },
    Released {
        r: ReservationId,
        why: String,
        at: String,
    },
    Sold {
        r: ReservationId,
        c: UserId,
        pay: PaymentId,
        tickets: Vec<SoldTicket>,
        at: String,
    },
}

#[derive(Deserialize)]
struct SoldTicket {
    seat: String,
    id: TicketId,
    code: String,
}

/// A time the scripts wrote: microseconds since the epoch, as decimal text.
fn micros(text: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(text.parse()?).context("time out of range")
}

/// A one-step payment, as the engine records its two halves.
fn sold_events(
    reservation: ReservationId,
    customer: UserId,
    payment: PaymentId,
    sold: Vec<SoldTicket>,
    price: &Money,
    at: DateTime<Utc>,
) -> anyhow::Result<Vec<ShowtimeEvent>> {
    let tickets = sold
        .into_iter()
        .map(|t| {
            Ok(IssuedTicket {
                ticket_id: t.id,
                seat: SeatLabel::parse(&t.seat)?,
                price: price.clone(),
                code: t.code,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(vec![
        ShowtimeEvent::PaymentStarted(PaymentStarted {
            reservation_id: reservation,
            payment_id: payment,
            amount: total_of(price, tickets.len()),
            started_at: at,
            pinned_until: at + PIN_FOR,
        }),
        ShowtimeEvent::TicketsIssued(TicketsIssued {
            reservation_id: reservation,
            payment_id: payment,
            customer_id: customer,
            tickets,
            issued_at: at,
        }),
    ])
}

#[async_trait]
impl SeatStore for RedisStore {
    async fn prepare(
        &self,
        showtimes: &[ShowtimeId],
        seats: &[SeatLabel],
        _price: &Money,
    ) -> anyhow::Result<()> {
        let free: Vec<(String, &str)> = labels(seats).into_iter().map(|s| (s, "")).collect();
        for &showtime in showtimes {
            let _: () = self
                .conn
                .clone()
                .hset_multiple(Self::showtime_key(showtime, "seats"), &free)
                .await?;
        }
        Ok(())
    }

    async fn hold(
        &self,
        showtime: ShowtimeId,
        customer: UserId,
        seats: Vec<SeatLabel>,
    ) -> Result<Held, ApiError> {
        let reservation = ReservationId(Uuid::now_v7());
        let mut invocation = self.hold.prepare_invoke();
        invocation
            .arg(showtime.to_string())
            .arg(reservation.to_string())
            .arg(customer.to_string())
            .arg(HOLD_FOR.num_microseconds().expect("seconds fit"));
        for s in &seats {
            invocation.arg(s.as_str());
        }
        let answer: Vec<String> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        match answer.first().map(String::as_str) {
            Some("held") => Ok(Held {
                reservation_id: reservation,
                total: total_of(&self.price, seats.len()),
                seats,
                held_at: micros(&answer[1])?,
                expires_at: micros(&answer[2])?,
            }),
            Some("taken") => Err(ApiError::SeatsUnavailable(answer[1..].to_vec())),
            Some("unknown") => Err(ApiError::field(
                "seats",
                format!("the screen has no seat {}", answer[1..].join(", ")),
            )),
            _ => Err(ApiError::Internal(anyhow::anyhow!(
                "hold script answered {answer:?}"
            ))),
        }
    }

    async fn release(&self, reservation: ReservationId, customer: UserId) -> Result<(), ApiError> {
        let args = vec![
            "release".into(),
            reservation.to_string(),
            customer.to_string(),
        ];
        self.settle(args).await.map(|_| ())
    }

    async fn pay(
        &self,
        reservation: ReservationId,
        customer: UserId,
    ) -> Result<Vec<IssuedTicket>, ApiError> {
        // Ticket ids for the most seats a hold can have; the script uses one per seat.
        let ids: Vec<(TicketId, String)> = (0..marquee_domain::showtime::MAX_SEATS_PER_HOLD)
            .map(|_| (TicketId(Uuid::now_v7()), ticket_code()))
            .collect();
        let mut args = vec![
            "pay".into(),
            reservation.to_string(),
            customer.to_string(),
            Uuid::now_v7().to_string(),
        ];
        for (id, code) in &ids {
            args.push(id.to_string());
            args.push(code.clone());
        }
        let sold = self.settle(args).await?;
        Ok(sold[1..]
            .iter()
            .zip(ids)
            .map(|(seat, (ticket_id, code))| IssuedTicket {
                ticket_id,
                seat: SeatLabel::parse(seat).expect("the script returns stored labels"),
                price: self.price.clone(),
                code,
            })
            .collect())
    }

    async fn history(&self, showtime: ShowtimeId) -> anyhow::Result<Vec<ShowtimeEvent>> {
        let records: Vec<String> = self
            .conn
            .clone()
            .lrange(Self::showtime_key(showtime, "events"), 0, -1)
            .await?;
        let mut events = Vec::with_capacity(records.len());
        for r in records {
            events.extend(self.event_of(serde_json::from_str(&r)?)?);
        }
        Ok(events)
    }
}
