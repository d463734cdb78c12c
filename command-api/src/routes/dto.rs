//! Shapes shared by several resources, and the checks that turn raw input into domain values.

use crate::error::{ApiError, FieldError};
use marquee_domain::{Currency, Money};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Money in integer minor units: `{"amount": 1250, "currency": "USD"}` is 12.50 USD.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MoneyDto {
    #[schema(example = 1250)]
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
