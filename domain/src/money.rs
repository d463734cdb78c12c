//! Money as integer minor units with a currency. Never floats: 12.50 USD is `1250` `USD`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An ISO 4217 style currency code: three ASCII capital letters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// Parses a code such as `USD`.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(code.to_owned()))
        } else {
            Err(MoneyError::BadCurrency(code.chars().take(16).collect()))
        }
    }

    /// The code, e.g. `USD`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::parse(&code)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Largest amount a single price or total may reach: ten million major units. Far above any
/// cinema ticket, and far below `i64::MAX`, so sums of a few seats can never overflow.
pub const MAX_AMOUNT: i64 = 1_000_000_000;

/// An amount of money in minor units (cents) of a currency.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: Currency,
}

/// Why a money value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency must be three capital letters, got {0:?}")]
    BadCurrency(String),
    #[error("amount must be between 0 and {MAX_AMOUNT} minor units")]
    OutOfRange,
    #[error("cannot add {0} to {1}")]
    CurrencyMismatch(Currency, Currency),
}

impl Money {
    /// A non-negative amount of at most [`MAX_AMOUNT`] minor units.
    pub fn new(amount: i64, currency: Currency) -> Result<Self, MoneyError> {
        if (0..=MAX_AMOUNT).contains(&amount) {
            Ok(Self { amount, currency })
        } else {
            Err(MoneyError::OutOfRange)
        }
    }

    /// Zero in a currency.
    pub fn zero(currency: Currency) -> Self {
        Self {
            amount: 0,
            currency,
        }
    }

    /// The sum of two amounts of the same currency.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(
                self.currency.clone(),
                other.currency.clone(),
            ));
        }
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::OutOfRange)?;
        Ok(Money {
            amount,
            currency: self.currency.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(amount: i64) -> Money {
        Money::new(amount, Currency::parse("USD").unwrap()).unwrap()
    }

    #[test]
    fn currency_codes_are_three_capital_letters() {
        assert!(Currency::parse("USD").is_ok());
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("US").is_err());
        assert!(Currency::parse("ÜSD").is_err());
    }

    #[test]
    fn negative_and_huge_amounts_are_refused() {
        let usd_code = Currency::parse("USD").unwrap();
        assert_eq!(
            Money::new(-1, usd_code.clone()),
            Err(MoneyError::OutOfRange)
        );
        assert_eq!(
            Money::new(MAX_AMOUNT + 1, usd_code),
            Err(MoneyError::OutOfRange)
        );
    }

    #[test]
    fn adding_different_currencies_is_an_error() {
        let eur = Money::new(5, Currency::parse("EUR").unwrap()).unwrap();
        assert!(usd(1).checked_add(&eur).is_err());
        assert_eq!(usd(1).checked_add(&usd(2)), Ok(usd(3)));
    }
}
