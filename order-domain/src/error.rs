//! Errors of the domain: why a value could not be parsed, why a command was refused.

use crate::money::Satoshis;
use crate::price::PriceError;
use crate::Currency;
use crate::FiatAmount;

/// Why a raw value could not become one of the domain's value types.
///
/// The message states the rule that was broken, so the edge (an HTTP API, a CLI) can prefix it
/// with the field name and hand it to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not one of the currencies the business trades in.
    #[error("must be one of USD, EUR, GBP (got {0:?})")]
    UnknownCurrency(String),
    /// Not a plain decimal number such as `123.45`.
    #[error("must be a decimal number such as 123.45 (got {0:?})")]
    NotADecimal(String),
    /// A fiat amount outside `0 < amount < 1,000,000,000`.
    #[error("must be greater than 0 and less than 1000000000 (got {0})")]
    AmountOutOfRange(String),
    /// A fiat amount with more than two decimal places: never rounded, refused.
    #[error("must have at most 2 decimal places (got {0})")]
    TooManyDecimals(String),
    /// A rate that is zero or negative.
    #[error("must be a positive number (got {0})")]
    NotPositive(String),
    /// Not a UUID.
    #[error("must be a UUID such as 3f2504e0-4f89-11d3-9a0c-0305e82c3301 (got {0:?})")]
    NotAUuid(String),
    /// A client id that is empty, too long, or has characters outside the allowed set.
    #[error("must be 1 to 64 characters of A-Z a-z 0-9 . _ - (got {0:?})")]
    BadClientId(String),
    /// A BTC quantity with more than 8 decimal places or outside `0 < x <= 21,000,000`.
    #[error("must be a BTC amount greater than 0, at most 21000000, with at most 8 decimal places (got {0})")]
    BadBtcAmount(String),
}

/// Why the `BuyOrder` aggregate refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuyOrderError {
    /// The idempotence key was already used for an order with another currency or amount.
    #[error(
        "idempotence key already used for an order of {existing_amount} {existing_currency}; \
         this request asks for {requested_amount} {requested_currency}"
    )]
    IdempotencyKeyReused {
        /// Currency of the order that holds the key.
        existing_currency: Currency,
        /// Amount of the order that holds the key.
        existing_amount: FiatAmount,
        /// Currency of the refused request.
        requested_currency: Currency,
        /// Amount of the refused request.
        requested_amount: FiatAmount,
    },
    /// No fresh price could be had; nothing was stored.
    #[error("{0}")]
    PriceUnavailable(PriceError),
    /// The order would take the sum of all orders over the BTC cap; nothing was stored.
    ///
    /// Raised by the event store, which applies the [`crate::BtcLedger`] with the commit.
    #[error("order of {requested} BTC exceeds the BTC cap: {remaining} BTC remain")]
    CapExceeded {
        /// BTC the refused order asked for.
        requested: Satoshis,
        /// BTC that can still be bought, for all clients together.
        remaining: Satoshis,
    },
    /// The amount converts to more satoshis than can be represented, which no cap allows.
    #[error("{amount} {currency} at a rate of {rate} is more bitcoin than can ever be bought")]
    BtcAmountOutOfRange {
        /// The fiat amount asked for.
        amount: FiatAmount,
        /// Its currency.
        currency: Currency,
        /// The rate quoted, as text.
        rate: String,
    },
}
