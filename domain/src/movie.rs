//! The `Movie` aggregate: a film in the catalog.

use crate::ids::MovieId;
use chrono::NaiveDate;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Longest runtime accepted, in minutes (a little over the longest films ever screened).
pub const MAX_RUNTIME_MINUTES: u32 = 900;

/// What the catalog knows about a movie.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MovieDetails {
    pub title: String,
    pub runtime_minutes: u32,
    #[serde(default)]
    pub rating: Option<String>,
    #[serde(default)]
    pub genres: Vec<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub release_date: Option<NaiveDate>,
    #[serde(default)]
    pub synopsis: Option<String>,
    #[serde(default)]
    pub poster_url: Option<String>,
    #[serde(default)]
    pub trailer_url: Option<String>,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MovieChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_minutes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genres: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synopsis: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poster_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trailer_url: Option<String>,
}

/// Commands a movie accepts.
#[derive(Clone, Debug, PartialEq)]
pub enum MovieCommand {
    Add { id: MovieId, details: MovieDetails },
    Update(MovieChanges),
}

impl crate::CommandName for MovieCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Add { .. } => "AddMovie",
            Self::Update(_) => "UpdateMovie",
        }
    }
}

/// What happened to a movie.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MovieEvent {
    MovieAdded { id: MovieId, details: MovieDetails },
    MovieUpdated(MovieChanges),
}

impl DomainEvent for MovieEvent {
    fn event_type(&self) -> String {
        match self {
            Self::MovieAdded { .. } => "MovieAdded",
            Self::MovieUpdated(_) => "MovieUpdated",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Broken movie rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MovieError {
    #[error("the movie already exists")]
    AlreadyExists,
    #[error("no such movie")]
    NotFound,
    #[error("runtime must be between 1 and {MAX_RUNTIME_MINUTES} minutes")]
    BadRuntime,
}

/// The movie's state, folded from its events.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Movie {
    pub id: Option<MovieId>,
    pub details: Option<MovieDetails>,
}

fn runtime_ok(minutes: u32) -> bool {
    (1..=MAX_RUNTIME_MINUTES).contains(&minutes)
}

impl Movie {
    /// Decides a command against the current state.
    pub fn decide(&self, command: MovieCommand) -> Result<Vec<MovieEvent>, MovieError> {
        match command {
            MovieCommand::Add { id, details } => {
                if self.id.is_some() {
                    return Err(MovieError::AlreadyExists);
                }
                if !runtime_ok(details.runtime_minutes) {
                    return Err(MovieError::BadRuntime);
                }
                Ok(vec![MovieEvent::MovieAdded { id, details }])
            }
            MovieCommand::Update(changes) => {
                if self.id.is_none() {
                    return Err(MovieError::NotFound);
                }
                if changes.runtime_minutes.is_some_and(|m| !runtime_ok(m)) {
                    return Err(MovieError::BadRuntime);
                }
                Ok(vec![MovieEvent::MovieUpdated(changes)])
            }
        }
    }
}

impl Aggregate for Movie {
    const TYPE: &'static str = "Movie";
    type Command = MovieCommand;
    type Event = MovieEvent;
    type Error = MovieError;
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
            MovieEvent::MovieAdded { id, details } => {
                self.id = Some(id);
                self.details = Some(details);
            }
            MovieEvent::MovieUpdated(c) => {
                if let Some(d) = self.details.as_mut() {
                    apply_changes(d, c);
                }
            }
        }
    }
}

fn apply_changes(d: &mut MovieDetails, c: MovieChanges) {
    macro_rules! set {
        ($($f:ident),*) => {$( if let Some(v) = c.$f { d.$f = v; } )*};
    }
    macro_rules! set_opt {
        ($($f:ident),*) => {$( if let Some(v) = c.$f { d.$f = Some(v); } )*};
    }
    set!(title, runtime_minutes, genres);
    set_opt!(
        rating,
        language,
        release_date,
        synopsis,
        poster_url,
        trailer_url
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use uuid::Uuid;

    fn details(runtime: u32) -> MovieDetails {
        MovieDetails {
            title: "Heat".into(),
            runtime_minutes: runtime,
            rating: Some("R".into()),
            genres: vec!["crime".into()],
            language: Some("en".into()),
            release_date: None,
            synopsis: None,
            poster_url: None,
            trailer_url: None,
        }
    }
    fn id() -> MovieId {
        MovieId(Uuid::from_u128(7))
    }

    #[test]
    fn adding_a_movie_records_it() {
        TestFramework::<Movie>::with(())
            .given_no_previous_events()
            .when(MovieCommand::Add {
                id: id(),
                details: details(170),
            })
            .then_expect_events(vec![MovieEvent::MovieAdded {
                id: id(),
                details: details(170),
            }]);
    }

    #[test]
    fn a_movie_needs_a_plausible_runtime() {
        TestFramework::<Movie>::with(())
            .given_no_previous_events()
            .when(MovieCommand::Add {
                id: id(),
                details: details(0),
            })
            .then_expect_error(MovieError::BadRuntime);
    }

    #[test]
    fn updating_changes_only_the_given_fields() {
        let mut movie = Movie::default();
        movie.apply(MovieEvent::MovieAdded {
            id: id(),
            details: details(170),
        });
        movie.apply(MovieEvent::MovieUpdated(MovieChanges {
            title: Some("Heat (1995)".into()),
            ..Default::default()
        }));
        let d = movie.details.unwrap();
        assert_eq!(d.title, "Heat (1995)");
        assert_eq!(d.runtime_minutes, 170);
        assert_eq!(d.rating.as_deref(), Some("R"));
    }

    #[test]
    fn an_unknown_movie_cannot_be_updated() {
        TestFramework::<Movie>::with(())
            .given_no_previous_events()
            .when(MovieCommand::Update(MovieChanges::default()))
            .then_expect_error(MovieError::NotFound);
    }
}
