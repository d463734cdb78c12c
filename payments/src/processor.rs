//! Card payments behind a trait, and the built-in test processor.
//!
//! The built-in [`TestCardProcessor`] behaves like a card processor's test mode:
//! `4242424242424242` succeeds, `4000000000000002` is declined with `card_declined`,
//! `4000000000009995` with `insufficient_funds`; any other number that passes the Luhn check
//! succeeds. Its latency is `MARQUEE_PAYMENT_LATENCY_MS`. A real processor plugs in behind
//! [`PaymentProvider`]; each charge carries Marquee's payment id so the processor can
//! deduplicate retries, and the reconciler ([`crate::reconcile`]) settles what a crash or a
//! timeout left open.

use async_trait::async_trait;
use marquee_domain::{Money, PaymentId};
use sqlx::PgPool;
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

/// What a processor knows of a payment.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeStatus {
    /// The card was charged.
    Charged,
    /// The charge was declined, for this reason.
    Declined(String),
    /// The processor never received the charge.
    Unknown,
    /// The payment was voided before any charge for it arrived: none ever will be made.
    Voided,
}

/// A card processor. Charges and refunds carry Marquee's ids, and a processor must treat a
/// repeated id as the same request (real processors call this an idempotency key), so that
/// retrying after a crash or a timeout can never move money twice.
#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Charges `amount` to `card`; `payment` identifies the attempt.
    async fn charge(
        &self,
        payment: PaymentId,
        amount: &Money,
        card: &Card,
    ) -> Result<(), PaymentError>;
    /// What became of the charge `payment`, for a payment whose answer never arrived.
    async fn status(&self, payment: PaymentId) -> Result<ChargeStatus, PaymentError>;
    /// Makes sure `payment` is never charged from now on, unless it already was, and says
    /// which: [`ChargeStatus::Voided`], or what became of the charge that got there first. A
    /// charge can still be on its way after its sender gave up waiting; without this, one
    /// arriving after the reconciler recorded its payment as failed would be money with no
    /// ticket and no refund. (Real processors call this cancelling the payment.)
    async fn void(&self, payment: PaymentId) -> Result<ChargeStatus, PaymentError>;
    /// Gives back `amount` of the successful charge `payment`; `refund` identifies the
    /// refund (one payment can be refunded in parts, e.g. ticket by ticket).
    async fn refund(
        &self,
        refund: &str,
        payment: PaymentId,
        amount: &Money,
    ) -> Result<(), PaymentError>;
}

/// The test double of a card processor. Like a real one it keeps its own records (tables
/// `test_processor_charges` and `test_processor_refunds`, apart from Marquee's), answers a
/// repeated charge or refund id from them, and answers after the money has moved: a process
/// killed, or a timeout, during its `latency` leaves a charge Marquee has not recorded yet,
/// which is what reconciliation is for.
pub struct TestCardProcessor {
    pub pool: PgPool,
    /// How long it takes to answer once it has charged.
    pub latency: Duration,
    /// How long a charge takes to reach it. The charge travels on by itself once sent, as a
    /// request on the wire does, even if its sender stops waiting.
    pub transit: Duration,
}

fn unavailable(e: sqlx::Error) -> PaymentError {
    PaymentError::Unavailable(e.to_string())
}

#[async_trait]
impl PaymentProvider for TestCardProcessor {
    async fn charge(
        &self,
        payment: PaymentId,
        amount: &Money,
        card: &Card,
    ) -> Result<(), PaymentError> {
        let outcome = match card.number.as_str() {
            "4000000000000002" => "card_declined",
            "4000000000009995" => "insufficient_funds",
            _ => "charged",
        };
        let (pool, transit) = (self.pool.clone(), self.transit);
        let (value, currency) = (amount.amount, amount.currency.as_str().to_owned());
        let arrival = tokio::spawn(async move {
            tokio::time::sleep(transit).await;
            record(&pool, payment, value, &currency, outcome).await
        });
        arrival
            .await
            .map_err(|e| PaymentError::Unavailable(e.to_string()))??;
        // A repeated id gets the first answer.
        let status = self.status(payment).await?;
        tracing::info!(%payment, amount = amount.amount, currency = %amount.currency, ?status, ?card, "test processor charge");
        tokio::time::sleep(self.latency).await;
        match status {
            ChargeStatus::Charged => Ok(()),
            ChargeStatus::Declined(reason) => Err(PaymentError::Declined(reason)),
            ChargeStatus::Voided => Err(PaymentError::Declined("voided".into())),
            ChargeStatus::Unknown => Err(PaymentError::Unavailable("charge not recorded".into())),
        }
    }

    async fn void(&self, payment: PaymentId) -> Result<ChargeStatus, PaymentError> {
        // The first of a charge and a void to arrive wins; the other gets its answer.
        record(&self.pool, payment, 0, "", "voided").await?;
        self.status(payment).await
    }

    async fn status(&self, payment: PaymentId) -> Result<ChargeStatus, PaymentError> {
        let outcome: Option<String> =
            sqlx::query_scalar("select outcome from test_processor_charges where payment_id = $1")
                .bind(payment.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(match outcome.as_deref() {
            None => ChargeStatus::Unknown,
            Some("charged") => ChargeStatus::Charged,
            Some("voided") => ChargeStatus::Voided,
            Some(reason) => ChargeStatus::Declined(reason.to_owned()),
        })
    }

    async fn refund(
        &self,
        refund: &str,
        payment: PaymentId,
        amount: &Money,
    ) -> Result<(), PaymentError> {
        if self.status(payment).await? != ChargeStatus::Charged {
            return Err(PaymentError::Declined("no_such_charge".into()));
        }
        sqlx::query(
            "insert into test_processor_refunds (refund_id, payment_id, amount, currency)
             values ($1, $2, $3, $4) on conflict (refund_id) do nothing",
        )
        .bind(refund)
        .bind(payment.0)
        .bind(amount.amount)
        .bind(amount.currency.as_str())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        tracing::info!(%payment, refund, amount = amount.amount, currency = %amount.currency, "test processor refund");
        tokio::time::sleep(self.latency).await;
        Ok(())
    }
}

/// Records what the test processor did with a payment id; the first record of an id stands.
async fn record(
    pool: &PgPool,
    payment: PaymentId,
    amount: i64,
    currency: &str,
    outcome: &str,
) -> Result<(), PaymentError> {
    sqlx::query(
        "insert into test_processor_charges (payment_id, amount, currency, outcome)
         values ($1, $2, $3, $4) on conflict (payment_id) do nothing",
    )
    .bind(payment.0)
    .bind(amount)
    .bind(currency)
    .bind(outcome)
    .execute(pool)
    .await
    .map_err(unavailable)?;
    Ok(())
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
