//! The `Theater` aggregate: a cinema building, its screens with their seat layouts, and the
//! schedule of each screen.
//!
//! The theater owns the schedules so that "two showtimes on one screen never overlap" is decided
//! inside one aggregate (one consistency boundary). A showtime occupies its screen from its start
//! for the movie's runtime plus [`CLEANING_GAP_MINUTES`].

use crate::ids::{ScreenId, ShowtimeId, TheaterId};
use crate::seating::{LayoutError, SeatLayout};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Minutes a screen stays busy after a movie ends, for cleaning and letting people out and in.
/// Fifteen minutes is the common turnaround of multiplex schedules.
pub const CLEANING_GAP_MINUTES: i64 = 15;

/// Most screens one theater may have.
pub const MAX_SCREENS: usize = 40;

/// A point on Earth in degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

impl Location {
    /// A location with latitude in [-90, 90] and longitude in [-180, 180].
    pub fn new(lat: f64, lon: f64) -> Option<Self> {
        let ok = lat.is_finite()
            && lon.is_finite()
            && (-90.0..=90.0).contains(&lat)
            && (-180.0..=180.0).contains(&lon);
        ok.then_some(Self { lat, lon })
    }
}

/// A screen as described by an admin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Screen {
    pub id: ScreenId,
    pub name: String,
    /// Layout strings, front row first (see [`crate::seating`]).
    pub layout: Vec<String>,
}

/// Everything that describes a theater, as given when it is added.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TheaterDetails {
    pub name: String,
    pub address: String,
    pub city: String,
    pub location: Location,
    pub timezone: String,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TheaterChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// A time range a showtime occupies a screen: `[starts_at, busy_until)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub showtime_id: ShowtimeId,
    pub screen_id: ScreenId,
    pub starts_at: DateTime<Utc>,
    pub busy_until: DateTime<Utc>,
}

impl Slot {
    fn overlaps(&self, other: &Slot) -> bool {
        self.screen_id == other.screen_id
            && self.starts_at < other.busy_until
            && other.starts_at < self.busy_until
    }
}

/// Commands a theater accepts.
#[derive(Clone, Debug, PartialEq)]
pub enum TheaterCommand {
    Add {
        id: TheaterId,
        details: TheaterDetails,
        screens: Vec<Screen>,
    },
    Update(TheaterChanges),
    /// Reserves a screen for a showtime; refused when it overlaps another.
    BookSlot(Slot),
    /// Frees the slot of a cancelled showtime. Freeing a slot that is not booked does nothing.
    ReleaseSlot {
        showtime_id: ShowtimeId,
    },
}

impl crate::CommandName for TheaterCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Add { .. } => "AddTheater",
            Self::Update(_) => "UpdateTheater",
            Self::BookSlot(_) => "BookScreenSlot",
            Self::ReleaseSlot { .. } => "ReleaseScreenSlot",
        }
    }
}

/// What happened to a theater.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TheaterEvent {
    TheaterAdded {
        id: TheaterId,
        details: TheaterDetails,
        screens: Vec<Screen>,
    },
    TheaterUpdated(TheaterChanges),
    ScreenSlotBooked(Slot),
    ScreenSlotReleased {
        showtime_id: ShowtimeId,
    },
}

impl DomainEvent for TheaterEvent {
    fn event_type(&self) -> String {
        match self {
            Self::TheaterAdded { .. } => "TheaterAdded",
            Self::TheaterUpdated(_) => "TheaterUpdated",
            Self::ScreenSlotBooked(_) => "ScreenSlotBooked",
            Self::ScreenSlotReleased { .. } => "ScreenSlotReleased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Broken theater rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TheaterError {
    #[error("the theater already exists")]
    AlreadyExists,
    #[error("no such theater")]
    NotFound,
    #[error("a theater needs between 1 and {MAX_SCREENS} screens")]
    ScreenCount,
    #[error("screen {index}: {source}")]
    BadLayout { index: usize, source: LayoutError },
    #[error("two screens share the name {0:?}")]
    DuplicateScreenName(String),
    #[error("two screens share the id {0}")]
    DuplicateScreenId(ScreenId),
    #[error("the theater has no screen {0}")]
    UnknownScreen(ScreenId),
    #[error("the screen is busy with showtime {0} at that time")]
    ScreenBusy(ShowtimeId),
    #[error("a showtime must end after it starts")]
    EmptySlot,
}

/// The theater's state, folded from its events.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Theater {
    pub id: Option<TheaterId>,
    pub details: Option<TheaterDetails>,
    pub screens: Vec<Screen>,
    /// Booked slots of every screen, cancelled ones removed.
    pub slots: Vec<Slot>,
}

impl Theater {
    /// Whether the theater has been added.
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// A screen by id.
    pub fn screen(&self, id: ScreenId) -> Option<&Screen> {
        self.screens.iter().find(|s| s.id == id)
    }

    /// Decides a command against the current state.
    pub fn decide(&self, command: TheaterCommand) -> Result<Vec<TheaterEvent>, TheaterError> {
        match command {
            TheaterCommand::Add {
                id,
                details,
                screens,
            } => self.add(id, details, screens),
            TheaterCommand::Update(changes) => self.update(changes),
            TheaterCommand::BookSlot(slot) => self.book_slot(slot),
            TheaterCommand::ReleaseSlot { showtime_id } => Ok(self.release_slot(showtime_id)),
        }
    }

    fn add(
        &self,
        id: TheaterId,
        details: TheaterDetails,
        screens: Vec<Screen>,
    ) -> Result<Vec<TheaterEvent>, TheaterError> {
        if self.exists() {
            return Err(TheaterError::AlreadyExists);
        }
        check_screens(&screens)?;
        Ok(vec![TheaterEvent::TheaterAdded {
            id,
            details,
            screens,
        }])
    }

    fn update(&self, changes: TheaterChanges) -> Result<Vec<TheaterEvent>, TheaterError> {
        if !self.exists() {
            return Err(TheaterError::NotFound);
        }
        Ok(vec![TheaterEvent::TheaterUpdated(changes)])
    }

    fn book_slot(&self, slot: Slot) -> Result<Vec<TheaterEvent>, TheaterError> {
        if !self.exists() {
            return Err(TheaterError::NotFound);
        }
        if self.screen(slot.screen_id).is_none() {
            return Err(TheaterError::UnknownScreen(slot.screen_id));
        }
        if slot.busy_until <= slot.starts_at {
            return Err(TheaterError::EmptySlot);
        }
        if let Some(taken) = self.slots.iter().find(|s| s.overlaps(&slot)) {
            return Err(TheaterError::ScreenBusy(taken.showtime_id));
        }
        Ok(vec![TheaterEvent::ScreenSlotBooked(slot)])
    }

    fn release_slot(&self, showtime_id: ShowtimeId) -> Vec<TheaterEvent> {
        if self.slots.iter().any(|s| s.showtime_id == showtime_id) {
            vec![TheaterEvent::ScreenSlotReleased { showtime_id }]
        } else {
            Vec::new()
        }
    }
}

fn check_screens(screens: &[Screen]) -> Result<(), TheaterError> {
    if screens.is_empty() || screens.len() > MAX_SCREENS {
        return Err(TheaterError::ScreenCount);
    }
    for (index, screen) in screens.iter().enumerate() {
        SeatLayout::parse(&screen.layout)
            .map_err(|source| TheaterError::BadLayout { index, source })?;
        let earlier = &screens[..index];
        if earlier.iter().any(|s| s.name == screen.name) {
            return Err(TheaterError::DuplicateScreenName(screen.name.clone()));
        }
        if earlier.iter().any(|s| s.id == screen.id) {
            return Err(TheaterError::DuplicateScreenId(screen.id));
        }
    }
    Ok(())
}

impl Aggregate for Theater {
    const TYPE: &'static str = "Theater";
    type Command = TheaterCommand;
    type Event = TheaterEvent;
    type Error = TheaterError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let decided = self.decide(command);
        crate::record(self, decided, sink).await
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TheaterEvent::TheaterAdded {
                id,
                details,
                screens,
            } => {
                self.id = Some(id);
                self.details = Some(details);
                self.screens = screens;
            }
            TheaterEvent::TheaterUpdated(changes) => {
                if let Some(d) = self.details.as_mut() {
                    apply_changes(d, changes);
                }
            }
            TheaterEvent::ScreenSlotBooked(slot) => self.slots.push(slot),
            TheaterEvent::ScreenSlotReleased { showtime_id } => {
                self.slots.retain(|s| s.showtime_id != showtime_id)
            }
        }
    }
}

fn apply_changes(d: &mut TheaterDetails, c: TheaterChanges) {
    if let Some(v) = c.name {
        d.name = v;
    }
    if let Some(v) = c.address {
        d.address = v;
    }
    if let Some(v) = c.city {
        d.city = v;
    }
    if let Some(v) = c.location {
        d.location = v;
    }
    if let Some(v) = c.timezone {
        d.timezone = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;
    use uuid::Uuid;

    type Given = TestFramework<Theater>;

    fn theater_id() -> TheaterId {
        TheaterId(Uuid::from_u128(1))
    }
    fn screen(n: u128, name: &str) -> Screen {
        Screen {
            id: ScreenId(Uuid::from_u128(100 + n)),
            name: name.into(),
            layout: vec!["ss.ss".into(), "pppp".into()],
        }
    }
    fn details() -> TheaterDetails {
        TheaterDetails {
            name: "Roxy".into(),
            address: "12 Main St".into(),
            city: "Springfield".into(),
            location: Location::new(40.7, -74.0).unwrap(),
            timezone: "America/New_York".into(),
        }
    }
    fn added() -> TheaterEvent {
        TheaterEvent::TheaterAdded {
            id: theater_id(),
            details: details(),
            screens: vec![screen(1, "Screen 1"), screen(2, "Screen 2")],
        }
    }
    fn slot(showtime: u128, screen_no: u128, start_h: u32, end_h: u32) -> Slot {
        Slot {
            showtime_id: ShowtimeId(Uuid::from_u128(1000 + showtime)),
            screen_id: ScreenId(Uuid::from_u128(100 + screen_no)),
            starts_at: Utc.with_ymd_and_hms(2030, 1, 1, start_h, 0, 0).unwrap(),
            busy_until: Utc.with_ymd_and_hms(2030, 1, 1, end_h, 0, 0).unwrap(),
        }
    }

    #[test]
    fn adding_a_theater_records_its_screens() {
        Given::with(())
            .given_no_previous_events()
            .when(TheaterCommand::Add {
                id: theater_id(),
                details: details(),
                screens: vec![screen(1, "Screen 1"), screen(2, "Screen 2")],
            })
            .then_expect_events(vec![added()]);
    }

    #[test]
    fn a_theater_cannot_be_added_twice() {
        Given::with(())
            .given(vec![added()])
            .when(TheaterCommand::Add {
                id: theater_id(),
                details: details(),
                screens: vec![screen(1, "Screen 1")],
            })
            .then_expect_error(TheaterError::AlreadyExists);
    }

    #[test]
    fn a_bad_layout_names_its_screen_and_row() {
        let mut bad = screen(2, "Screen 2");
        bad.layout = vec!["ss".into(), "sx".into()];
        Given::with(())
            .given_no_previous_events()
            .when(TheaterCommand::Add {
                id: theater_id(),
                details: details(),
                screens: vec![screen(1, "Screen 1"), bad],
            })
            .then_expect_error(TheaterError::BadLayout {
                index: 1,
                source: LayoutError::UnknownCharacter { row: 1, found: 'x' },
            });
    }

    #[test]
    fn screens_need_distinct_names_and_at_least_one_screen() {
        Given::with(())
            .given_no_previous_events()
            .when(TheaterCommand::Add {
                id: theater_id(),
                details: details(),
                screens: vec![screen(1, "Same"), screen(2, "Same")],
            })
            .then_expect_error(TheaterError::DuplicateScreenName("Same".into()));
        Given::with(())
            .given_no_previous_events()
            .when(TheaterCommand::Add {
                id: theater_id(),
                details: details(),
                screens: vec![],
            })
            .then_expect_error(TheaterError::ScreenCount);
    }

    #[test]
    fn overlapping_showtimes_on_one_screen_are_refused() {
        Given::with(())
            .given(vec![
                added(),
                TheaterEvent::ScreenSlotBooked(slot(1, 1, 18, 21)),
            ])
            .when(TheaterCommand::BookSlot(slot(2, 1, 20, 22)))
            .then_expect_error(TheaterError::ScreenBusy(slot(1, 1, 18, 21).showtime_id));
    }

    #[test]
    fn back_to_back_and_other_screen_showtimes_are_fine() {
        Given::with(())
            .given(vec![
                added(),
                TheaterEvent::ScreenSlotBooked(slot(1, 1, 18, 21)),
            ])
            .when(TheaterCommand::BookSlot(slot(2, 1, 21, 23)))
            .then_expect_events(vec![TheaterEvent::ScreenSlotBooked(slot(2, 1, 21, 23))]);
        Given::with(())
            .given(vec![
                added(),
                TheaterEvent::ScreenSlotBooked(slot(1, 1, 18, 21)),
            ])
            .when(TheaterCommand::BookSlot(slot(2, 2, 18, 21)))
            .then_expect_events(vec![TheaterEvent::ScreenSlotBooked(slot(2, 2, 18, 21))]);
    }

    #[test]
    fn a_released_slot_can_be_booked_again() {
        let first = slot(1, 1, 18, 21);
        Given::with(())
            .given(vec![
                added(),
                TheaterEvent::ScreenSlotBooked(first.clone()),
                TheaterEvent::ScreenSlotReleased {
                    showtime_id: first.showtime_id,
                },
            ])
            .when(TheaterCommand::BookSlot(slot(2, 1, 18, 21)))
            .then_expect_events(vec![TheaterEvent::ScreenSlotBooked(slot(2, 1, 18, 21))]);
    }

    #[test]
    fn booking_an_unknown_screen_is_refused() {
        Given::with(())
            .given(vec![added()])
            .when(TheaterCommand::BookSlot(slot(1, 9, 18, 21)))
            .then_expect_error(TheaterError::UnknownScreen(ScreenId(Uuid::from_u128(109))));
    }

    #[test]
    fn releasing_an_unbooked_slot_records_nothing() {
        Given::with(())
            .given(vec![added()])
            .when(TheaterCommand::ReleaseSlot {
                showtime_id: ShowtimeId(Uuid::from_u128(5)),
            })
            .then_expect_events(vec![]);
    }
}
