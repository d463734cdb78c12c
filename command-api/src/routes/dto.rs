//! Shapes shared by several resources, and the checks that turn raw input into domain values.

use crate::error::{ApiError, FieldError};
use marquee_domain::{Currency, Money};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Money in integer minor units: `{"amount": 1250, "currency": "USD"}` is 12.50 USD.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MoneyDto {
    #[schema(example = 1250, minimum = 0)]
    pub amount: i64,
    #[schema(example = "USD")]
    pub currency: String,
}

impl From<&Money> for MoneyDto {
    fn from(m: &Money) -> Self {
        Self {
            amount: m.amount,
            currency: m.currency.to_string(),
        }
    }
}

impl MoneyDto {
    /// A price: a non-negative amount in a three-letter currency.
    pub fn parse(&self, field: &str, errors: &mut Errors) -> Option<Money> {
        let Ok(currency) = Currency::parse(&self.currency) else {
            errors.add(
                format!("{field}.currency"),
                "use a three-letter code such as USD",
            );
            return None;
        };
        match Money::new(self.amount, currency) {
            Ok(m) => Some(m),
            Err(e) => {
                errors.add(format!("{field}.amount"), e.to_string());
                None
            }
        }
    }
}

/// Collects every invalid field of a request, so the client learns of all of them at once.
#[derive(Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Checks a required text field: trimmed, 1 to `max` characters, no control characters.
    pub fn text(&mut self, field: &str, value: &str, max: usize) -> String {
        let v = value.trim();
        if v.is_empty() {
            self.add(field, "must not be empty");
        } else {
            self.check_text(field, v, max);
        }
        v.to_owned()
    }

    /// Checks an optional text field; empty means absent.
    pub fn optional_text(
        &mut self,
        field: &str,
        value: Option<&str>,
        max: usize,
    ) -> Option<String> {
        let v = value.map(str::trim).filter(|v| !v.is_empty())?;
        self.check_text(field, v, max);
        Some(v.to_owned())
    }

    fn check_text(&mut self, field: &str, v: &str, max: usize) {
        if v.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        } else if v.chars().any(|c| c.is_control() && c != '\n') {
            self.add(field, "must not contain control characters");
        } else if v.chars().any(is_deceptive) {
            self.add(
                field,
                "must not contain invisible or text-direction characters",
            );
        }
    }

    /// Checks an optional http(s) URL.
    pub fn optional_url(&mut self, field: &str, value: Option<&str>) -> Option<String> {
        let v = self.optional_text(field, value, 2048)?;
        if !(v.starts_with("https://") || v.starts_with("http://")) || v.contains(' ') {
            self.add(field, "must be an http(s) URL");
        }
        Some(v)
    }

    /// `Ok` when nothing was added.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

/// Characters that make text read differently from what it is: direction overrides and
/// isolates (a name shown reversed, an email that looks like another) and invisible ones.
/// The zero-width joiners stay allowed: scripts and emoji need them.
fn is_deceptive(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Most a search radius may be, in kilometres.
pub const MAX_RADIUS_KM: f64 = 500.0;
/// The radius when none is given.
pub const DEFAULT_RADIUS_KM: f64 = 25.0;

/// `lat`, `lon` and `radius_km` of a search: both coordinates or neither.
pub fn near(
    errors: &mut Errors,
    lat: Option<f64>,
    lon: Option<f64>,
    radius_km: Option<f64>,
) -> Option<marquee_projections::theaters::Near> {
    let radius_km = radius_km.unwrap_or(DEFAULT_RADIUS_KM);
    if !(radius_km > 0.0 && radius_km <= MAX_RADIUS_KM) {
        errors.add(
            "radius_km",
            format!("must be above 0 and at most {MAX_RADIUS_KM}"),
        );
    }
    match (lat, lon) {
        (Some(lat), Some(lon)) => {
            if marquee_domain::theater::Location::new(lat, lon).is_none() {
                errors.add(
                    "lat",
                    "lat must be within [-90, 90] and lon within [-180, 180]",
                );
            }
            Some(marquee_projections::theaters::Near {
                lat,
                lon,
                radius_km,
            })
        }
        (None, None) => None,
        _ => {
            errors.add("lat", "give both lat and lon, or neither");
            None
        }
    }
}

/// A money JSON object from a read model.
pub fn money_of(v: &serde_json::Value) -> MoneyDto {
    serde_json::from_value(v.clone()).unwrap_or(MoneyDto {
        amount: 0,
        currency: String::new(),
    })
}
