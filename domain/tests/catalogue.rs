//! docs/events.md must list every event type with exactly its fields.

use chrono::{TimeZone, Utc};
use cqrs_es::DomainEvent;
use marquee_domain::movie::{MovieChanges, MovieDetails, MovieEvent};
use marquee_domain::showtime::*;
use marquee_domain::theater::{Location, Slot, TheaterChanges, TheaterDetails, TheaterEvent};
use marquee_domain::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Adding an event variant breaks this match on purpose: add a sample below, and its entry
/// to docs/events.md.
fn covered(e: &Sample) {
    match e {
        Sample::Theater(TheaterEvent::TheaterAdded { .. })
        | Sample::Theater(TheaterEvent::TheaterUpdated(_))
        | Sample::Theater(TheaterEvent::ScreenSlotBooked(_))
        | Sample::Theater(TheaterEvent::ScreenSlotReleased { .. })
        | Sample::Movie(MovieEvent::MovieAdded { .. })
        | Sample::Movie(MovieEvent::MovieUpdated(_))
        | Sample::Showtime(ShowtimeEvent::ShowtimeScheduled { .. })
        | Sample::Showtime(ShowtimeEvent::SeatsHeld(_))
        | Sample::Showtime(ShowtimeEvent::HoldReleased { .. })
        | Sample::Showtime(ShowtimeEvent::HoldExpired { .. })
        | Sample::Showtime(ShowtimeEvent::PaymentStarted(_))
        | Sample::Showtime(ShowtimeEvent::PaymentFailed(_))
        | Sample::Showtime(ShowtimeEvent::TicketsIssued(_))
        | Sample::Showtime(ShowtimeEvent::PaymentRefunded { .. })
        | Sample::Showtime(ShowtimeEvent::ShowtimeCancelled { .. })
        | Sample::Showtime(ShowtimeEvent::TicketRefunded(_)) => {}
    }
}

enum Sample {
    Theater(TheaterEvent),
    Movie(MovieEvent),
    Showtime(ShowtimeEvent),
}

impl Sample {
    /// (aggregate type, event type, version, top-level field names)
    fn describe(&self) -> (&'static str, String, String, BTreeSet<String>) {
        let (aggregate, event_type, version, payload) = match self {
            Sample::Theater(e) => (
                "Theater",
                e.event_type(),
                e.event_version(),
                serde_json::to_value(e),
            ),
            Sample::Movie(e) => (
                "Movie",
                e.event_type(),
                e.event_version(),
                serde_json::to_value(e),
            ),
            Sample::Showtime(e) => (
                "Showtime",
                e.event_type(),
                e.event_version(),
                serde_json::to_value(e),
            ),
        };
        let payload = payload.unwrap();
        let fields = match &payload[&event_type] {
            Value::Object(m) => m.keys().cloned().collect(),
            other => panic!("{event_type} does not serialize to an object: {other}"),
        };
        (aggregate, event_type, version, fields)
    }
}

fn samples() -> Vec<Sample> {
    let t = Utc.with_ymd_and_hms(2030, 1, 1, 20, 0, 0).unwrap();
    let id = || Uuid::from_u128(7);
    let usd = Money::new(1250, Currency::parse("USD").unwrap()).unwrap();
    let seat = SeatLabel::parse("F7").unwrap();
    let details = ShowtimeDetails {
        movie_id: MovieId(id()),
        theater_id: TheaterId(id()),
        screen_id: ScreenId(id()),
        starts_at: t,
        ends_at: t,
        format: None,
        layout: vec!["ss".into()],
        prices: BTreeMap::new(),
    };
    // Partial updates: every field set, so that every field shows.
    let theater_changes = TheaterChanges {
        name: Some("x".into()),
        address: Some("x".into()),
        city: Some("x".into()),
        location: Location::new(1.0, 1.0),
        timezone: Some("UTC".into()),
    };
    let movie_details = MovieDetails {
        title: "x".into(),
        runtime_minutes: 90,
        rating: None,
        genres: vec![],
        language: None,
        release_date: None,
        synopsis: None,
        poster_url: None,
        trailer_url: None,
    };
    let movie_changes = MovieChanges {
        title: Some("x".into()),
        runtime_minutes: Some(90),
        rating: Some("x".into()),
        genres: Some(vec![]),
        language: Some("x".into()),
        release_date: Some(t.date_naive()),
        synopsis: Some("x".into()),
        poster_url: Some("x".into()),
        trailer_url: Some("x".into()),
    };
    let slot = Slot {
        showtime_id: ShowtimeId(id()),
        screen_id: ScreenId(id()),
        starts_at: t,
        busy_until: t,
    };
    vec![
        Sample::Theater(TheaterEvent::TheaterAdded {
            id: TheaterId(id()),
            details: TheaterDetails {
                name: "x".into(),
                address: "x".into(),
                city: "x".into(),
                location: Location::new(1.0, 1.0).unwrap(),
                timezone: "UTC".into(),
            },
            screens: vec![],
        }),
        Sample::Theater(TheaterEvent::TheaterUpdated(theater_changes)),
        Sample::Theater(TheaterEvent::ScreenSlotBooked(slot)),
        Sample::Theater(TheaterEvent::ScreenSlotReleased {
            showtime_id: ShowtimeId(id()),
        }),
        Sample::Movie(MovieEvent::MovieAdded {
            id: MovieId(id()),
            details: movie_details,
        }),
        Sample::Movie(MovieEvent::MovieUpdated(movie_changes)),
        Sample::Showtime(ShowtimeEvent::ShowtimeScheduled {
            id: ShowtimeId(id()),
            details,
            scheduled_at: t,
        }),
        Sample::Showtime(ShowtimeEvent::SeatsHeld(SeatsHeld {
            reservation_id: ReservationId(id()),
            customer_id: UserId(id()),
            seats: vec![seat.clone()],
            total: usd.clone(),
            held_at: t,
            expires_at: t,
            row_started_at: Some(t),
        })),
        Sample::Showtime(ShowtimeEvent::HoldReleased {
            reservation_id: ReservationId(id()),
            reason: ReleaseReason::Customer,
            released_at: t,
        }),
        Sample::Showtime(ShowtimeEvent::HoldExpired {
            reservation_id: ReservationId(id()),
            expired_at: t,
        }),
        Sample::Showtime(ShowtimeEvent::PaymentStarted(PaymentStarted {
            reservation_id: ReservationId(id()),
            payment_id: PaymentId(id()),
            amount: usd.clone(),
            started_at: t,
            pinned_until: t,
        })),
        Sample::Showtime(ShowtimeEvent::PaymentFailed(PaymentFailed {
            reservation_id: ReservationId(id()),
            payment_id: PaymentId(id()),
            reason: "card_declined".into(),
            retryable: true,
            failed_at: t,
        })),
        Sample::Showtime(ShowtimeEvent::TicketsIssued(TicketsIssued {
            reservation_id: ReservationId(id()),
            payment_id: PaymentId(id()),
            customer_id: UserId(id()),
            tickets: vec![IssuedTicket {
                ticket_id: TicketId(id()),
                seat,
                price: usd.clone(),
                code: "X".into(),
            }],
            issued_at: t,
        })),
        Sample::Showtime(ShowtimeEvent::PaymentRefunded {
            reservation_id: ReservationId(id()),
            payment_id: PaymentId(id()),
            amount: usd.clone(),
            refunded_at: t,
        }),
        Sample::Showtime(ShowtimeEvent::ShowtimeCancelled { cancelled_at: t }),
        Sample::Showtime(ShowtimeEvent::TicketRefunded(TicketRefunded {
            ticket_id: TicketId(id()),
            reservation_id: ReservationId(id()),
            payment_id: PaymentId(id()),
            amount: usd,
            refunded_at: t,
        })),
    ]
}

/// `### Name (Aggregate, vN)` headings with the first column of the table under each.
fn documented() -> BTreeMap<String, (String, String, BTreeSet<String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md");
    let text = std::fs::read_to_string(path).expect("docs/events.md exists");
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String, String, BTreeSet<String>)> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            if let Some((name, agg, ver, fields)) = current.take() {
                out.insert(name, (agg, ver, fields));
            }
            let (name, rest) = heading.split_once(" (").expect("### Name (Aggregate, vN)");
            let (agg, ver) = rest
                .trim_end_matches(')')
                .split_once(", v")
                .expect("(Aggregate, vN)");
            current = Some((
                name.to_owned(),
                agg.to_owned(),
                ver.to_owned(),
                BTreeSet::new(),
            ));
        } else if let Some((_, _, _, fields)) = current.as_mut() {
            if let Some(cell) = line.strip_prefix("| `") {
                fields.insert(cell.split('`').next().unwrap().to_owned());
            }
        }
    }
    if let Some((name, agg, ver, fields)) = current {
        out.insert(name, (agg, ver, fields));
    }
    out
}

#[test]
fn the_event_catalogue_lists_every_event_with_exactly_its_fields() {
    let documented = documented();
    let mut in_code = BTreeSet::new();
    for sample in samples() {
        covered(&sample);
        let (aggregate, event_type, version, fields) = sample.describe();
        let (doc_agg, doc_ver, doc_fields) = documented
            .get(&event_type)
            .unwrap_or_else(|| panic!("docs/events.md has no section for {event_type}"));
        assert_eq!(doc_agg, aggregate, "{event_type}: aggregate");
        assert_eq!(doc_ver, &version, "{event_type}: version");
        assert_eq!(doc_fields, &fields, "{event_type}: fields");
        in_code.insert(event_type);
    }
    let in_docs: BTreeSet<String> = documented.keys().cloned().collect();
    assert_eq!(in_docs, in_code, "documented event types that do not exist");
}
