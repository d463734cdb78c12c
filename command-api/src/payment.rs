//! Card payments behind a trait, and the built-in test processor.
//!
//! The built-in [`TestCardProcessor`] behaves like a card processor's test mode:
//! `4242424242424242` succeeds, `4000000000000002` is declined with `card_declined`,
//! `4000000000009995` with `insufficient_funds`; any other number that passes the Luhn check
//! succeeds. Its latency is `MARQUEE_PAYMENT_LATENCY_MS`. A real processor plugs in behind
//! [`PaymentProvider`]; each charge carries Marquee's payment id so the processor can
//! deduplicate retries.

use async_trait::async_trait;
use marquee_domain::{Money, PaymentId};
use std::time::Duration;

/// Card details as the customer typed them. Never stored, logged or put in an event.
#[derive(Clone)]
pub struct Card {
    pub number: String,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let last4 = &self.number[self.number.len().saturating_sub(4)..];
        write!(f, "Card(**** {last4})")
    }
}

/// Why a charge did not go through.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PaymentError {
    /// The card was declined; the reason is safe to show the customer.
    #[error("declined: {0}")]
    Declined(String),
    /// The processor could not be reached or failed.
    #[error("processor unavailable: {0}")]
    Unavailable(String),
}

impl PaymentError {
    /// Whether trying again (another card, or later) can succeed. The test processor's
    /// declines all can; a real processor maps its own codes (a card reported stolen cannot).
    pub fn retryable(&self) -> bool {
        match self {
            Self::Declined(reason) => !matches!(reason.as_str(), "stolen_card" | "fraudulent"),
            Self::Unavailable(_) => true,
        }
    }
}

/// A card processor.
#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Charges `amount` to `card`; `payment` identifies the attempt.
    async fn charge(
        &self,
        payment: PaymentId,
        amount: &Money,
        card: &Card,
    ) -> Result<(), PaymentError>;
    /// Gives back `amount` of a successful charge.
    async fn refund(&self, payment: PaymentId, amount: &Money) -> Result<(), PaymentError>;
}

/// The test double of a card processor.
pub struct TestCardProcessor {
    pub latency: Duration,
}

#[async_trait]
impl PaymentProvider for TestCardProcessor {
    async fn charge(
        &self,
        payment: PaymentId,
        amount: &Money,
        card: &Card,
    ) -> Result<(), PaymentError> {
        tokio::time::sleep(self.latency).await;
        let outcome = match card.number.as_str() {
            "4000000000000002" => Err(PaymentError::Declined("card_declined".into())),
            "4000000000009995" => Err(PaymentError::Declined("insufficient_funds".into())),
            _ => Ok(()),
        };
        tracing::info!(%payment, amount = amount.amount, currency = %amount.currency, ok = outcome.is_ok(), ?card, "test processor charge");
        outcome
    }

    async fn refund(&self, payment: PaymentId, amount: &Money) -> Result<(), PaymentError> {
        tokio::time::sleep(self.latency).await;
        tracing::info!(%payment, amount = amount.amount, currency = %amount.currency, "test processor refund");
        Ok(())
    }
}

/// Whether a card number passes the Luhn checksum (digits only).
pub fn luhn_valid(number: &str) -> bool {
    let mut sum = 0;
    for (i, c) in number.bytes().rev().enumerate() {
        if !c.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !number.is_empty() && sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_numbers_pass_luhn_and_typos_do_not() {
        for n in ["4242424242424242", "4000000000000002", "4000000000009995"] {
            assert!(luhn_valid(n), "{n}");
        }
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid("42424242a4242424"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn card_numbers_never_show_in_debug_output() {
        let card = Card {
            number: "4242424242424242".into(),
        };
        assert_eq!(format!("{card:?}"), "Card(**** 4242)");
    }
}
