//! Major → minor units, by the currency's ISO 4217 exponent.
//!
//! Conscent.ai and Foloosi send amounts in major units (`1` INR, `"100"` AED). Converting through
//! a float would lose paise, so the amount's decimal text is parsed exactly (`rust_decimal`) and
//! scaled by the exponent `iso_currency` knows for the code (0 for JPY, 2 for INR, 3 for KWD).

use iso_currency::Currency as Iso;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use crate::event::Money;

/// A refund larger than this (in minor units) is refused as absurd rather than stored: it is far
/// beyond any real refund and keeps every later sum well inside `i64`.
pub const MAX_MINOR: i64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not an ISO 4217 currency code")]
    UnknownCurrency(String),
    #[error("currency `{0}` has no minor unit")]
    NoMinorUnit(String),
    #[error("`{0}` is not a decimal amount")]
    NotANumber(String),
    #[error("amount `{amount}` has more decimals than {currency} allows ({exponent})")]
    TooPrecise { amount: String, currency: String, exponent: u16 },
    #[error("amount `{0}` is negative")]
    Negative(String),
    #[error("amount `{0}` is out of range")]
    OutOfRange(String),
}

/// An ISO 4217 currency that has a minor unit: the only kind an amount is kept in. It is its
/// upper-case code in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(Iso);

impl Currency {
    pub const USD: Currency = Currency(Iso::USD);

    /// The currency for `code`, upper-cased first.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let upper = code.trim().to_ascii_uppercase();
        let iso = Iso::from_code(&upper).ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))?;
        iso.exponent().ok_or(MoneyError::NoMinorUnit(upper))?;
        Ok(Currency(iso))
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point: 2 for USD, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u16 {
        // `parse` admits only currencies that have one.
        self.0.exponent().unwrap_or(0)
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount already in minor units (Memberful, Rainforest), checked against the same bounds.
pub fn from_minor(minor: i64, code: &str) -> Result<Money, MoneyError> {
    let currency = Currency::parse(code)?;
    if minor < 0 {
        return Err(MoneyError::Negative(minor.to_string()));
    }
    if minor > MAX_MINOR {
        return Err(MoneyError::OutOfRange(minor.to_string()));
    }
    Ok(Money { minor, currency })
}

/// `major` is the amount's decimal text as the provider sent it (`"100"`, `"12.5"`, `1e2`).
pub fn to_minor(major: &str, code: &str) -> Result<Money, MoneyError> {
    let currency = Currency::parse(code)?;
    let exponent = currency.exponent();
    let text = major.trim();
    // Exponent notation is legal JSON; rust_decimal parses it separately.
    let parsed = if text.contains(['e', 'E']) { Decimal::from_scientific(text) } else { Decimal::from_str_exact(text) };
    let value = parsed.map_err(|_| MoneyError::NotANumber(major.to_owned()))?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(MoneyError::Negative(major.to_owned()));
    }
    let scale = Decimal::from(10u64.pow(u32::from(exponent)));
    let scaled = value.checked_mul(scale).ok_or_else(|| MoneyError::OutOfRange(major.to_owned()))?;
    if !scaled.fract().is_zero() {
        return Err(MoneyError::TooPrecise { amount: major.to_owned(), currency: currency.to_string(), exponent });
    }
    let minor = scaled.to_i64().filter(|m| *m <= MAX_MINOR).ok_or_else(|| MoneyError::OutOfRange(major.to_owned()))?;
    Ok(Money { minor, currency })
}

/// `12.34 USD`, for readable texts.
pub fn display(m: &Money) -> String {
    let value = Decimal::new(m.minor, u32::from(m.currency.exponent()));
    format!("{value} {}", m.currency)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minor(major: &str, code: &str) -> i64 {
        to_minor(major, code).unwrap().minor
    }

    #[test]
    fn converts_by_the_currency_exponent() {
        assert_eq!(minor("1", "INR"), 100);
        assert_eq!(minor("100", "AED"), 10_000);
        assert_eq!(minor("12.34", "aed"), 1_234);
        assert_eq!(minor("500", "JPY"), 500); // exponent 0
        assert_eq!(minor("1.234", "KWD"), 1_234); // exponent 3
        assert_eq!(minor("0.005", "BHD"), 5);
        assert_eq!(minor("1e2", "USD"), 10_000);
        assert_eq!(minor("0", "USD"), 0);
    }

    #[test]
    fn refuses_what_cannot_be_exact() {
        assert!(matches!(to_minor("1.5", "JPY"), Err(MoneyError::TooPrecise { .. })));
        assert!(matches!(to_minor("0.001", "INR"), Err(MoneyError::TooPrecise { .. })));
        assert!(matches!(to_minor("-1", "INR"), Err(MoneyError::Negative(_))));
        assert!(matches!(to_minor("ten", "INR"), Err(MoneyError::NotANumber(_))));
        assert!(matches!(to_minor("1", "XYZ"), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!(to_minor("1e20", "USD"), Err(MoneyError::OutOfRange(_))));
        assert!(matches!(to_minor("1", "XAU"), Err(MoneyError::NoMinorUnit(_))));
    }

    #[test]
    fn displays_in_major_units() {
        assert_eq!(display(&Money { minor: 1234, currency: Currency::USD }), "12.34 USD");
        assert_eq!(display(&Money { minor: 500, currency: Currency::parse("JPY").unwrap() }), "500 JPY");
        assert_eq!(display(&Money { minor: 1234, currency: Currency::parse("kwd").unwrap() }), "1.234 KWD");
    }

    #[test]
    fn minor_amounts_are_bounded_too() {
        assert_eq!(from_minor(9900, "usd").unwrap(), Money { minor: 9900, currency: Currency::USD });
        assert!(from_minor(-1, "USD").is_err());
        assert!(from_minor(i64::MAX, "USD").is_err());
    }
}
